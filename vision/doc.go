// Package vision owns getting frames and turning them into model input:
// frame sources addressed by URI (Jetson CSI, V4L2/USB, RTSP, HTTP MJPEG,
// video files, image folders, raw GStreamer pipelines) with bounded opens
// and reads, reconnects with backoff and a freshest-frame slot;
// reading image files with a completeness check (ReadImage, CheckImage);
// the one preprocessing (Prepare) and tiling driven by the checkpoint's
// metadata, which finetune trains with too; and annotated JPEG snapshots
// kept under a byte cap.
//
// gocv Mats are not garbage collected: every Mat made here is closed here,
// and tests built with -tags matprofile check the count returns to zero.
package vision
