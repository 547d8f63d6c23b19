package vision

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"gocv.io/x/gocv"

	"github.com/leafwatch/leafwatch/internal/redact"
)

func init() {
	// Prefer TCP for RTSP: UDP through greenhouse Wi-Fi drops packets and
	// OpenCV then returns grey smeared frames instead of an error.
	if os.Getenv("OPENCV_FFMPEG_CAPTURE_OPTIONS") == "" {
		os.Setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
	}
}

// cvReader reads from an OpenCV VideoCapture. A blocked Read cannot be
// interrupted, so it is only ever closed by the goroutine that reads.
type cvReader struct {
	vc   *gocv.VideoCapture
	loop bool
	file bool
	fps  float64
	once sync.Once
	csi  bool
}

func (r *cvReader) Interruptible() bool { return false }
func (r *cvReader) Pulled() bool        { return r.file }
func (r *cvReader) Close()              { r.once.Do(func() { r.vc.Close() }) }
func (r *cvReader) nativeFPS() float64  { return r.fps }

func (r *cvReader) Read(dst *gocv.Mat) error {
	if r.vc.Read(dst) && !dst.Empty() {
		return nil
	}
	if !r.file {
		err := errors.New("camera returned no frame")
		if r.csi {
			err = csiHint(err)
		}
		return err
	}
	if !r.loop {
		return errEnd
	}
	r.vc.Set(gocv.VideoCapturePosFrames, 0)
	if r.vc.Read(dst) && !dst.Empty() {
		return nil
	}
	return errors.New("video file cannot be rewound for looping")
}

// gstElementExists asks GStreamer's registry whether an element exists.
// OpenCV's open blocks forever when a pipeline's first element is missing,
// so every element is checked before opening.
func gstElementExists(ctx context.Context, name string) (bool, error) {
	path, err := exec.LookPath("gst-inspect-1.0")
	if err != nil {
		return false, errors.New("gst-inspect-1.0 not found (install gstreamer1.0-tools) to check the pipeline before opening it")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err = exec.CommandContext(ctx, path, "--exists", name).Run()
	if err == nil {
		return true, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return false, nil
	}
	return false, err
}

func checkPipeline(ctx context.Context, p string) error {
	for _, el := range pipelineElements(p) {
		ok, err := gstElementExists(ctx, el)
		if err != nil {
			return err
		}
		if !ok {
			hint := ""
			switch el {
			case "nvarguscamerasrc", "nvvidconv":
				hint = " (it ships with NVIDIA JetPack: csi:// works only on a Jetson)"
			case "rtspsrc", "v4l2src", "souphttpsrc":
				hint = " (install gstreamer1.0-plugins-good)"
			}
			return errPermanent{fmt.Errorf("GStreamer element %q does not exist%s; pipeline: %s", el, hint, redact.Passwords(p))}
		}
	}
	return nil
}

// argusSocket is where nvargus-daemon, which owns Jetson CSI cameras,
// listens; nvarguscamerasrc talks to it.
const argusSocket = "/tmp/argus_socket"

// csiHint adds what usually cures a failing CSI camera. Argus reports its
// errors ("Failed to create CaptureSession") on the process's stderr, not to
// OpenCV, so every CSI failure carries the hint.
func csiHint(err error) error {
	hint := "if the journal shows \"Failed to create CaptureSession\", restarting nvargus-daemon is the usual cure: sudo systemctl restart nvargus-daemon"
	if strings.Contains(err.Error(), argusSocket) {
		hint = "nvargus-daemon is not running, or the service cannot see its socket (PrivateTmp=yes hides /tmp: install the Jetson drop-in, systemd/jetson.conf): sudo systemctl restart nvargus-daemon"
	}
	return fmt.Errorf("%w; %s", err, hint)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func openCapture(ctx context.Context, s SourceSpec) (reader, error) {
	var (
		target any
		api    gocv.VideoCaptureAPI
	)
	switch s.Kind {
	case KindFile:
		st, err := os.Stat(s.Target)
		if err != nil {
			return nil, errPermanent{fmt.Errorf("video file: %w", err)}
		}
		if st.IsDir() {
			return nil, errPermanent{fmt.Errorf("video file %s is a folder (use folder://)", s.Target)}
		}
		target, api = s.Target, gocv.VideoCaptureFFmpeg
	case KindRTSP:
		target, api = s.Target, gocv.VideoCaptureFFmpeg
	case KindV4L2:
		if _, err := os.Stat(s.Target); err != nil {
			return nil, fmt.Errorf("camera device: %w (unplugged?)", err)
		}
		if s.Backend == "v4l2" {
			target, api = s.Target, gocv.VideoCaptureV4L2
			break
		}
		fallthrough
	case KindCSI, KindGst:
		if s.Kind == KindV4L2 {
			var err error
			if s, err = s.ResolveDecoder(func(el string) (bool, error) { return gstElementExists(ctx, el) }); err != nil {
				return nil, err
			}
		}
		p := s.Pipeline()
		if err := checkPipeline(ctx, p); err != nil {
			return nil, err
		}
		if s.Kind == KindCSI && !fileExists(argusSocket) {
			return nil, csiHint(errors.New("no Argus socket " + argusSocket))
		}
		target, api = p, gocv.VideoCaptureGstreamer
	default:
		return nil, fmt.Errorf("no capture for source kind %s", s.Kind)
	}
	vc, err := gocv.OpenVideoCaptureWithAPI(target, api)
	if err != nil {
		if vc != nil {
			vc.Close()
		}
		if s.Kind == KindFile {
			return nil, errPermanent{fmt.Errorf("cannot open video file %s: not a video or no decoder for it (%v)", s.Target, err)}
		}
		return nil, fmt.Errorf("open %s: %w", s.Display, redactErr(err))
	}
	if !vc.IsOpened() {
		vc.Close()
		err := fmt.Errorf("open %s: OpenCV could not open it", s.Display)
		if s.Kind == KindCSI {
			err = csiHint(err)
		}
		return nil, err
	}
	if s.Kind == KindV4L2 && s.Backend == "v4l2" {
		if s.Width > 0 {
			vc.Set(gocv.VideoCaptureFrameWidth, float64(s.Width))
			vc.Set(gocv.VideoCaptureFrameHeight, float64(s.Height))
		}
		if s.FPS > 0 {
			vc.Set(gocv.VideoCaptureFPS, s.FPS)
		}
	}
	r := &cvReader{vc: vc, loop: s.Loop, file: s.Kind == KindFile, csi: s.Kind == KindCSI}
	if r.file {
		r.fps = vc.Get(gocv.VideoCaptureFPS)
	}
	return r, nil
}
