package vision

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"strings"
	"testing"
)

// FuzzCheckImage: no file panics the image check; a refusal wraps
// ErrBadImage; a file it accepts as JPEG or PNG decodes to at least
// MinImageSide pixels each way.
func FuzzCheckImage(f *testing.F) {
	img := image.NewRGBA(image.Rect(0, 0, 16, 12))
	for i := range img.Pix {
		img.Pix[i] = byte(i * 7)
	}
	img.Set(3, 3, color.RGBA{255, 0, 0, 255})
	var j, p bytes.Buffer
	jpeg.Encode(&j, img, nil)
	png.Encode(&p, img)
	f.Add(j.Bytes())
	f.Add(j.Bytes()[:j.Len()/2])
	f.Add(p.Bytes())
	f.Add([]byte("BM\x00\x00"))
	f.Add([]byte("II*\x00\x08\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		err := CheckImage(b)
		if err != nil {
			if !errors.Is(err, ErrBadImage) {
				t.Fatalf("refusal without ErrBadImage: %v", err)
			}
			return
		}
		if bytes.HasPrefix(b, []byte{0xff, 0xd8, 0xff}) || bytes.HasPrefix(b, []byte("\x89PNG")) {
			cfg, _, err := image.DecodeConfig(bytes.NewReader(b))
			if err != nil || cfg.Width < MinImageSide || cfg.Height < MinImageSide {
				t.Fatalf("accepted an image whose header says %v, %v", cfg, err)
			}
		}
	})
}

// FuzzParseSource: no camera URI panics the parser, and an error never
// shows a password that was in the URI.
func FuzzParseSource(f *testing.F) {
	for _, s := range []string{"csi://0?width=1280&height=720&fps=60&rotate=180", "v4l2:///dev/video0?format=mjpeg&decoder=hw",
		"rtsp://viewer:s3cret@cam:554/stream1?open_timeout=5s", "http://u:pw@cam/video.mjpg?fps=x", "file:///data/x.mp4?loop=true",
		"/data/images/", "folder:///data/images?fps=1", "gst://videotestsrc ! appsink", "rtsp://%zz", "csi://abc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		_, err := ParseSource(raw)
		if err == nil {
			return
		}
		// A password is what follows "user:" up to "@" in the authority.
		if i := strings.Index(raw, "://"); i >= 0 {
			auth := raw[i+3:]
			if at := strings.LastIndex(strings.SplitN(auth, "/", 2)[0], "@"); at > 0 {
				if _, pw, ok := strings.Cut(auth[:at], ":"); ok && len(pw) >= 4 && !strings.ContainsAny(pw, "%@/?#") && strings.Contains(err.Error(), ":"+pw+"@") {
					t.Fatalf("the error shows the password: %v", err)
				}
			}
		}
	})
}
