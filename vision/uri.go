package vision

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/leafwatch/leafwatch/internal/redact"
)

// Kind is the type of a frame source.
type Kind string

const (
	KindCSI    Kind = "csi"    // Jetson CSI camera via nvarguscamerasrc
	KindV4L2   Kind = "v4l2"   // USB/V4L2 camera
	KindRTSP   Kind = "rtsp"   // network camera
	KindHTTP   Kind = "http"   // MJPEG over HTTP(S) or a JPEG snapshot URL
	KindFile   Kind = "file"   // video file
	KindFolder Kind = "folder" // folder of images
	KindGst    Kind = "gst"    // raw GStreamer pipeline ending in appsink
)

// SourceSpec is a parsed source URI with its options.
type SourceSpec struct {
	URI string // as configured: may hold credentials, never logged
	// Display is URI with passwords replaced: for logs, errors, status.
	Display string
	Kind    Kind
	Target  string // device path, file path, URL or pipeline

	Width, Height int     // requested capture size (0 = camera default)
	FPS           float64 // requested/paced frame rate (0 = native)
	Flip          string  // none, horizontal, vertical, both
	Rotate        int     // 0, 90, 180, 270 (clockwise)
	Loop          bool    // file and folder sources start over at the end
	Backend       string  // v4l2: "gstreamer" (default) or "v4l2"
	// Format is what a v4l2 camera is asked to send: "raw" (default) or
	// "mjpeg" (most USB cameras above 640×480 at full frame rate).
	Format string
	// Decoder decodes MJPEG: "auto" (the Jetson hardware decoder
	// nvv4l2decoder when it exists, else jpegdec), "hw" or "sw". Open
	// resolves auto; Pipeline needs hw or sw.
	Decoder string

	OpenTimeout time.Duration
	ReadTimeout time.Duration
}

// ParseSource parses a source URI. Options go in the query string:
//
//	csi://0?width=1920&height=1080&fps=30&flip=rotate-180
//	v4l2:///dev/video0?width=1280&height=720&backend=v4l2
//	v4l2:///dev/video0?width=1920&height=1080&fps=30&format=mjpeg
//	rtsp://user:pw@cam.local:554/stream1
//	http://cam.local:8080/video.mjpg
//	file:///data/greenhouse.mp4?loop=true
//	/data/images/   (or folder:///data/images?fps=1&loop=true)
//	gst://videotestsrc is-live=true ! videoconvert ! appsink
//
// Common options: width, height, fps, flip (horizontal|vertical|both),
// rotate (90|180|270), loop, open_timeout, read_timeout (Go durations).
func ParseSource(raw string) (SourceSpec, error) {
	s := SourceSpec{URI: raw, Display: redact.Passwords(raw), OpenTimeout: 10 * time.Second, ReadTimeout: 5 * time.Second, Flip: "none"}
	if raw == "" {
		return s, fmt.Errorf("source is empty")
	}
	if rest, ok := strings.CutPrefix(raw, "gst://"); ok {
		return s, s.parseGst(raw, rest)
	}
	if !strings.Contains(raw, "://") {
		// A bare path: a folder of images or a video file.
		raw = "file://" + absPath(raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return s, fmt.Errorf("source %q: %v", s.Display, redactErr(err))
	}
	q := u.Query()
	switch u.Scheme {
	case "csi":
		s.Kind = KindCSI
		id := u.Host
		if id == "" {
			id = "0"
		}
		if _, err := strconv.Atoi(id); err != nil {
			return s, fmt.Errorf("source %q: CSI sensor id %q is not a number", s.Display, id)
		}
		s.Target = id
	case "v4l2":
		if err := s.parseV4L2(u, q); err != nil {
			return s, err
		}
	case "rtsp", "rtsps":
		s.Kind, s.Target = KindRTSP, stripQuery(u, q)
	case "http", "https":
		s.Kind, s.Target = KindHTTP, stripQuery(u, q)
	case "file", "folder":
		if err := s.parseFile(u); err != nil {
			return s, err
		}
	default:
		return s, fmt.Errorf("source %q: unknown scheme %q (use csi, v4l2, rtsp, http, https, file, folder or gst)", s.Display, u.Scheme)
	}
	if err := s.applyOptions(q); err != nil {
		return s, fmt.Errorf("source %q: %w", s.Display, err)
	}
	// Folders are read one image a second unless told otherwise: read as
	// fast as they decode, a whole folder passes between two samples.
	if s.Kind == KindFolder && s.FPS == 0 {
		s.FPS = 1
	}
	return s, nil
}

// parseGst takes a gst:// pipeline (it holds '!' and '=' freely: no
// query parsing), ending it in an appsink if it has none.
func (s *SourceSpec) parseGst(raw, rest string) error {
	s.Kind, s.Target = KindGst, strings.TrimSpace(rest)
	if s.Target == "" {
		return fmt.Errorf("source %q: empty GStreamer pipeline", raw)
	}
	if !strings.Contains(s.Target, "appsink") {
		s.Target += " ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1"
	}
	return nil
}

// parseV4L2 takes a v4l2:// device with its backend, format and decoder
// options (removed from q).
func (s *SourceSpec) parseV4L2(u *url.URL, q url.Values) error {
	s.Kind = KindV4L2
	s.Target = u.Path
	if s.Target == "" {
		s.Target = "/dev/video0"
	}
	s.Backend = q.Get("backend")
	if s.Backend == "" {
		s.Backend = "gstreamer"
	}
	if s.Backend != "gstreamer" && s.Backend != "v4l2" {
		return fmt.Errorf("source %q: backend must be gstreamer or v4l2", s.Display)
	}
	q.Del("backend")
	s.Format, s.Decoder = "raw", "auto"
	if v := q.Get("format"); v != "" {
		s.Format = v
	}
	if v := q.Get("decoder"); v != "" {
		s.Decoder = v
	}
	q.Del("format")
	q.Del("decoder")
	switch {
	case s.Format != "raw" && s.Format != "mjpeg":
		return fmt.Errorf("source %q: format must be raw or mjpeg", s.Display)
	case s.Decoder != "auto" && s.Decoder != "hw" && s.Decoder != "sw":
		return fmt.Errorf("source %q: decoder must be auto, hw (Jetson nvv4l2decoder) or sw (jpegdec)", s.Display)
	case s.Format == "mjpeg" && s.Backend != "gstreamer":
		return fmt.Errorf("source %q: format=mjpeg needs the gstreamer backend (OpenCV's v4l2 backend decodes by itself)", s.Display)
	}
	return nil
}

// parseFile takes a file:// or folder:// path: a folder of images or a
// video file.
func (s *SourceSpec) parseFile(u *url.URL) error {
	p := u.Path
	if u.Host != "" && u.Host != "localhost" {
		p = u.Host + p // file://relative/path
	}
	if p == "" {
		return fmt.Errorf("source %q: no path", s.Display)
	}
	s.Target = p
	if st, err := os.Stat(p); err == nil && st.IsDir() || u.Scheme == "folder" {
		s.Kind = KindFolder
	} else {
		s.Kind = KindFile
	}
	return nil
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// stripQuery removes our options from a network URL but keeps the camera's
// own query parameters.
func stripQuery(u *url.URL, q url.Values) string {
	c := *u
	rest := url.Values{}
	for k, v := range q {
		switch k {
		case "width", "height", "fps", "flip", "rotate", "loop", "open_timeout", "read_timeout":
		default:
			rest[k] = v
		}
	}
	c.RawQuery = rest.Encode()
	return c.String()
}

func (s *SourceSpec) applyOptions(q url.Values) error {
	for k, vs := range q {
		v := vs[0]
		var err error
		switch k {
		case "width":
			s.Width, err = positiveInt(v)
		case "height":
			s.Height, err = positiveInt(v)
		case "fps":
			s.FPS, err = strconv.ParseFloat(v, 64)
			if err == nil && !(s.FPS > 0 && s.FPS <= 240) {
				err = fmt.Errorf("must be in (0, 240]")
			}
		case "flip":
			switch v {
			case "none", "horizontal", "vertical", "both":
				s.Flip = v
			default:
				err = fmt.Errorf("must be none, horizontal, vertical or both")
			}
		case "rotate":
			s.Rotate, err = strconv.Atoi(v)
			if err == nil && s.Rotate != 0 && s.Rotate != 90 && s.Rotate != 180 && s.Rotate != 270 {
				err = fmt.Errorf("must be 0, 90, 180 or 270")
			}
		case "loop":
			s.Loop, err = strconv.ParseBool(v)
		case "open_timeout":
			s.OpenTimeout, err = boundedDuration(v, 100*time.Millisecond, 10*time.Minute)
		case "read_timeout":
			s.ReadTimeout, err = boundedDuration(v, 100*time.Millisecond, time.Hour)
		default:
			if s.Kind == KindRTSP || s.Kind == KindHTTP {
				continue // the camera's own parameter
			}
			err = fmt.Errorf("unknown option")
		}
		if err != nil {
			return fmt.Errorf("option %s=%q: %v", k, v, err)
		}
	}
	return nil
}

func boundedDuration(v string, lo, hi time.Duration) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err == nil && (d < lo || d > hi) {
		err = fmt.Errorf("must be %v..%v", lo, hi)
	}
	return d, err
}

// redactErr keeps url.Parse's errors (which quote the URL) free of
// passwords.
func redactErr(err error) error { return errors.New(redact.Passwords(err.Error())) }

func positiveInt(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err == nil && (n <= 0 || n > 16384) {
		err = fmt.Errorf("must be 1..16384")
	}
	return n, err
}

// Pipeline returns the GStreamer pipeline used for CSI, V4L2 (GStreamer
// backend), RTSP and raw gst sources, or "" when OpenCV opens the target
// directly.
func (s SourceSpec) Pipeline() string {
	w, h := s.Width, s.Height
	fps := int(s.FPS + 0.5)
	switch s.Kind {
	case KindCSI:
		if w == 0 || h == 0 {
			w, h = 1920, 1080
		}
		if fps == 0 {
			fps = 30
		}
		// nvvidconv does the flip in hardware; rotation uses flip-method too.
		return fmt.Sprintf("nvarguscamerasrc sensor-id=%s ! video/x-raw(memory:NVMM),width=%d,height=%d,framerate=%d/1,format=NV12 ! "+
			"nvvidconv flip-method=%d ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1",
			s.Target, w, h, fps, s.nvFlipMethod())
	case KindV4L2:
		if s.Backend != "gstreamer" {
			return ""
		}
		caps := "video/x-raw"
		if s.Format == "mjpeg" {
			caps = "image/jpeg"
		}
		if w > 0 && h > 0 {
			caps += fmt.Sprintf(",width=%d,height=%d", w, h)
		}
		if fps > 0 {
			caps += fmt.Sprintf(",framerate=%d/1", fps)
		}
		const tail = "videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1"
		switch {
		case s.Format != "mjpeg":
			return fmt.Sprintf("v4l2src device=%s ! %s ! %s", s.Target, caps, tail)
		case s.Decoder == "hw":
			// Jetson: the NVJPG engine decodes into NVMM memory; nvvidconv
			// brings the frame back to system memory.
			return fmt.Sprintf("v4l2src device=%s ! %s ! jpegparse ! nvv4l2decoder mjpeg=1 ! nvvidconv ! video/x-raw,format=BGRx ! %s", s.Target, caps, tail)
		default:
			return fmt.Sprintf("v4l2src device=%s ! %s ! jpegdec ! %s", s.Target, caps, tail)
		}
	case KindGst:
		return s.Target
	}
	return ""
}

// ResolveDecoder turns decoder=auto into hw when the Jetson hardware JPEG
// decoder exists and sw otherwise; exists asks GStreamer's registry.
func (s SourceSpec) ResolveDecoder(exists func(element string) (bool, error)) (SourceSpec, error) {
	if s.Kind != KindV4L2 || s.Format != "mjpeg" || s.Decoder != "auto" {
		return s, nil
	}
	hw, err := exists("nvv4l2decoder")
	if err != nil {
		return s, err
	}
	s.Decoder = "sw"
	if hw {
		s.Decoder = "hw"
	}
	return s, nil
}

// nvFlipMethod maps flip/rotate to nvvidconv's flip-method: 0 none,
// 1 counter-clockwise 90, 2 rotate 180, 3 clockwise 90, 4 horizontal,
// 6 vertical.
func (s SourceSpec) nvFlipMethod() int {
	switch {
	case s.Rotate == 90:
		return 3
	case s.Rotate == 180 || s.Flip == "both":
		return 2
	case s.Rotate == 270:
		return 1
	case s.Flip == "horizontal":
		return 4
	case s.Flip == "vertical":
		return 6
	}
	return 0
}

// orientInGo reports whether flip/rotate must be applied to each frame in
// software (CSI does it in the pipeline).
func (s SourceSpec) orientInGo() bool {
	return s.Kind != KindCSI && (s.Flip != "none" || s.Rotate != 0)
}

// firstElements returns the element names of a pipeline's first stage and
// every other stage, so their presence can be checked before opening.
func pipelineElements(p string) []string {
	var out []string
	for _, stage := range strings.Split(p, "!") {
		f := strings.Fields(strings.TrimSpace(stage))
		if len(f) == 0 {
			continue
		}
		name := f[0]
		if strings.Contains(name, "/") || strings.Contains(name, "(") {
			continue // caps, not an element
		}
		out = append(out, name)
	}
	return out
}
