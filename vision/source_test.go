package vision

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"github.com/leafwatch/leafwatch/internal/selfexec"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// solid returns a w×h BGR frame filled with one colour.
func solid(w, h int, c color.RGBA) gocv.Mat {
	return gocv.NewMatWithSizeFromScalar(gocv.NewScalar(float64(c.B), float64(c.G), float64(c.R), 0), h, w, gocv.MatTypeCV8UC3)
}

// writeVideo makes an MJPG AVI whose frame i is a solid grey of level 10·i.
func writeVideo(t testing.TB, frames int, fps float64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "greenhouse.avi")
	vw, err := gocv.VideoWriterFile(p, "MJPG", fps, 160, 120, true)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < frames; i++ {
		m := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(float64(10*i), float64(10*i), float64(10*i), 0), 120, 160, gocv.MatTypeCV8UC3)
		vw.Write(m)
		m.Close()
	}
	vw.Close()
	return p
}

func runCamera(t testing.TB, uri string) (*Camera, context.CancelFunc) {
	t.Helper()
	c, err := Open(uri, quiet)
	if err != nil {
		t.Fatal(err)
	}
	c.MinBackoff, c.MaxBackoff = 50*time.Millisecond, 400*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	go c.Run(ctx)
	t.Cleanup(func() { cancel(); c.Close() })
	return c, cancel
}

func waitUntil(t testing.TB, d time.Duration, what string, f func() bool) {
	t.Helper()
	if os.Getenv(selfexec.Env) != "" {
		d *= 5 // under emulation (arm64 tests in qemu) GStreamer starts slowly
	}
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if f() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", d, what)
}

func TestVideoFileSource(t *testing.T) {
	p := writeVideo(t, 10, 50)
	c, _ := runCamera(t, "file://"+p)
	waitUntil(t, 10*time.Second, "end of file", func() bool { return c.Status().State == StateEnded })
	st := c.Status()
	if st.Frames != 10 {
		t.Errorf("read %d frames, the file has 10", st.Frames)
	}
	m := gocv.NewMat()
	defer m.Close()
	seq, _ := c.Latest(&m)
	if seq != 10 || m.Cols() != 160 || m.Rows() != 120 {
		t.Fatalf("latest frame seq %d size %dx%d", seq, m.Cols(), m.Rows())
	}
	// The freshest frame is the last one written (grey 90), not a queued one.
	if v := m.GetVecbAt(60, 80)[0]; v < 80 || v > 100 {
		t.Errorf("latest frame grey level %d, want ~90", v)
	}
}

func TestVideoFileLoops(t *testing.T) {
	p := writeVideo(t, 5, 100)
	c, _ := runCamera(t, "file://"+p+"?loop=true")
	waitUntil(t, 10*time.Second, "more frames than the file has", func() bool { return c.Status().Frames > 12 })
	if s := c.Status().State; s != StateConnected {
		t.Errorf("looping file state %s", s)
	}
}

func TestMissingFileIsAClearError(t *testing.T) {
	c, _ := runCamera(t, "file:///nonexistent/plants.mp4")
	waitUntil(t, 5*time.Second, "failed state", func() bool { return c.Status().State == StateFailed })
	if e := c.Status().LastError; !strings.Contains(e, "/nonexistent/plants.mp4") || !strings.Contains(e, "no such file") {
		t.Errorf("error %q does not name the file and the cause", e)
	}
}

func TestImageFolderSkipsCorruptImage(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 3; i++ {
		m := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(0, float64(50*i), 0, 0), 64, 64, gocv.MatTypeCV8UC3)
		gocv.IMWrite(filepath.Join(dir, fmt.Sprintf("leaf%d.jpg", i)), m)
		m.Close()
	}
	os.WriteFile(filepath.Join(dir, "leaf1b.jpg"), []byte("\xff\xd8\xff this is not really a jpeg"), 0o644)
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("ignored"), 0o644)
	c, _ := runCamera(t, dir+"?fps=100")
	waitUntil(t, 10*time.Second, "end of folder", func() bool { return c.Status().State == StateEnded })
	st := c.Status()
	if st.Frames != 3 || st.Skipped != 1 {
		t.Fatalf("frames %d skipped %d, want 3 and 1", st.Frames, st.Skipped)
	}
}

func TestGStreamerTestSource(t *testing.T) {
	if _, err := exec.LookPath("gst-inspect-1.0"); err != nil {
		t.Skip("GStreamer tools not installed (make deps installs them)")
	}
	c, _ := runCamera(t, "gst://videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=30/1 ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1")
	waitUntil(t, 15*time.Second, "frames from videotestsrc", func() bool { return c.Status().Frames >= 10 })
	m := gocv.NewMat()
	defer m.Close()
	if seq, _ := c.Latest(&m); seq == 0 || m.Cols() != 320 {
		t.Fatalf("seq %d width %d", seq, m.Cols())
	}
}

func TestMissingGStreamerElementFailsFast(t *testing.T) {
	if _, err := exec.LookPath("gst-inspect-1.0"); err != nil {
		t.Skip("GStreamer tools not installed (make deps installs them)")
	}
	start := time.Now()
	c, _ := runCamera(t, "csi://0")
	waitUntil(t, 10*time.Second, "failure", func() bool { return c.Status().State == StateFailed })
	if e := c.Status().LastError; !strings.Contains(e, "nvarguscamerasrc") {
		t.Errorf("error %q does not name the missing element", e)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
}

// mjpegServer streams solid frames as multipart/x-mixed-replace until
// stopped; it can be restarted on the same port.
type mjpegServer struct {
	addr   string
	srv    *http.Server
	served atomic.Int64
}

func startMJPEG(t testing.TB, addr string) *mjpegServer {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &mjpegServer{addr: ln.Addr().String()}
	img := solid(96, 64, color.RGBA{0, 160, 0, 0})
	buf, _ := gocv.IMEncode(gocv.JPEGFileExt, img)
	jpeg := append([]byte(nil), buf.GetBytes()...)
	buf.Close()
	img.Close()
	s.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mw := multipart.NewWriter(w)
		w.Header().Set("Content-Type", "multipart/x-mixed-replace; boundary="+mw.Boundary())
		for r.Context().Err() == nil {
			pw, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"image/jpeg"}})
			if err != nil {
				return
			}
			pw.Write(jpeg)
			if f, ok := w.(http.Flusher); ok {
				f.Flush()
			}
			s.served.Add(1)
			time.Sleep(20 * time.Millisecond)
		}
	})}
	go s.srv.Serve(ln)
	return s
}

func (s *mjpegServer) stop() { s.srv.Close() }

func TestHTTPMJPEGReconnects(t *testing.T) {
	s := startMJPEG(t, "127.0.0.1:0")
	c, _ := runCamera(t, "http://"+s.addr+"/video.mjpg?read_timeout=1s")
	waitUntil(t, 10*time.Second, "frames", func() bool { return c.Status().Frames >= 5 })
	s.stop()
	waitUntil(t, 10*time.Second, "reconnecting state", func() bool { return c.Status().State == StateReconnecting })
	before := c.Status().Frames
	s2 := startMJPEG(t, s.addr)
	defer s2.stop()
	waitUntil(t, 15*time.Second, "frames after the server came back", func() bool { return c.Status().Frames >= before+5 })
	st := c.Status()
	if st.State != StateConnected || st.Reconnects == 0 {
		t.Fatalf("after restart: %+v", st)
	}
	m := gocv.NewMat()
	defer m.Close()
	c.Latest(&m)
	if px := m.GetVecbAt(32, 48); px[1] < 140 || px[0] > 30 {
		t.Errorf("decoded pixel %v, want green", px)
	}
}

func TestStalledStreamTriggersReconnect(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// A server that sends headers and then nothing: a camera that froze.
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "multipart/x-mixed-replace; boundary=frame")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})}
	go srv.Serve(ln)
	defer srv.Close()
	c, _ := runCamera(t, "http://"+ln.Addr().String()+"/?read_timeout=500ms")
	waitUntil(t, 10*time.Second, "a retry after the stall", func() bool { return c.Status().ConnectFailures >= 2 })
	st := c.Status()
	if !strings.Contains(st.LastError, "no frame") {
		t.Errorf("last error %q", st.LastError)
	}
	// Never a frame: never "connected", and no reconnect was counted (a
	// reconnect is a connection that delivers again after a loss).
	if st.State == StateConnected || st.Reconnects != 0 || st.Frames != 0 {
		t.Errorf("a camera that never sent a frame: %+v", st)
	}
}

// countingMJPEG serves an MJPEG stream at about 50 frames/s whose frames
// are grey levels counting up, so a reader can tell how old a frame is.
func countingMJPEG(t *testing.T) (addr string, served *atomic.Int64) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served = new(atomic.Int64)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mw := multipart.NewWriter(w)
		w.Header().Set("Content-Type", "multipart/x-mixed-replace; boundary="+mw.Boundary())
		for r.Context().Err() == nil {
			n := served.Load()
			img := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(float64(n%250), float64(n%250), float64(n%250), 0), 48, 64, gocv.MatTypeCV8UC3)
			buf, _ := gocv.IMEncode(gocv.JPEGFileExt, img)
			img.Close()
			pw, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"image/jpeg"}})
			if err != nil {
				buf.Close()
				return
			}
			pw.Write(buf.GetBytes())
			buf.Close()
			w.(http.Flusher).Flush()
			served.Add(1)
			time.Sleep(20 * time.Millisecond)
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), served
}

// TestStreamFPSKeepsTheNewestFrame: fps below a stream's rate drops
// frames; it must not slow the reading down and hand out old frames.
func TestStreamFPSKeepsTheNewestFrame(t *testing.T) {
	addr, served := countingMJPEG(t)
	c, _ := runCamera(t, "http://"+addr+"/video.mjpg?fps=2")
	waitUntil(t, 10*time.Second, "frames", func() bool { return c.Status().Frames >= 4 })
	m := gocv.NewMat()
	defer m.Close()
	c.Latest(&m)
	got := int64(m.GetVecbAt(24, 32)[0])
	want := (served.Load() - 1) % 250
	if lag := want - got; lag < -3 || lag > 40 {
		t.Errorf("latest frame is grey %d while the server is at %d: %d frames behind", got, want, lag)
	}
	if f := c.Status().Frames; f > 12 {
		t.Errorf("%d frames published in about 2 s at fps=2", f)
	}
}

// TestSlowSnapshotURLIsNotAStall: a JPEG snapshot URL polled every 2 s
// with read_timeout 500ms waits between polls without reconnecting.
func TestSlowSnapshotURLIsNotAStall(t *testing.T) {
	img := solid(64, 48, color.RGBA{0, 160, 0, 0})
	buf, _ := gocv.IMEncode(gocv.JPEGFileExt, img)
	jpeg := append([]byte(nil), buf.GetBytes()...)
	buf.Close()
	img.Close()
	var polls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		polls.Add(1)
		w.Header().Set("Content-Type", "image/jpeg")
		w.Write(jpeg)
	}))
	defer srv.Close()
	c, _ := runCamera(t, srv.URL+"/snap.jpg?fps=0.5&read_timeout=500ms")
	waitUntil(t, 10*time.Second, "two polls", func() bool { return c.Status().Frames >= 2 })
	st := c.Status()
	if st.ConnectFailures != 0 || st.Reconnects != 0 || st.State != StateConnected {
		t.Errorf("a paced snapshot URL was taken for a stall: %+v", st)
	}
}

// TestFolderWithoutFPSIsPaced: a folder without fps shows one image a
// second, not all of them before the first sample.
func TestFolderWithoutFPSIsPaced(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 8; i++ {
		img := solid(32, 32, color.RGBA{uint8(20 * i), 0, 0, 0})
		gocv.IMWrite(filepath.Join(dir, fmt.Sprintf("%02d.png", i)), img)
		img.Close()
	}
	c, _ := runCamera(t, dir)
	time.Sleep(1500 * time.Millisecond)
	if f := c.Status().Frames; f < 1 || f > 3 {
		t.Errorf("%d frames after 1.5 s from a folder without fps, want 1..3", f)
	}
}

// TestCredentialsAreRedacted: a password in a camera URI appears in no
// error, log line or status.
func TestCredentialsAreRedacted(t *testing.T) {
	for _, uri := range []string{"rtsp://admin:s3cret@10.1.2.3:554/stream1", "http://admin:s3cret@127.0.0.1:1/video.mjpg",
		"gst://rtspsrc location=rtsp://admin:s3cret@cam/1 ! decodebin ! appsink"} {
		s, err := ParseSource(uri)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(s.Display, "s3cret") || !strings.Contains(s.Display, "admin:xxxxx@") {
			t.Errorf("display %q", s.Display)
		}
	}
	if _, err := ParseSource("rtsp://admin:s3cret@cam/x?fps=abc"); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("parse error leaks the password: %v", err)
	}
	var logs strings.Builder
	c, err := Open("http://admin:s3cret@127.0.0.1:1/video.mjpg?open_timeout=1s", slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	c.MinBackoff, c.MaxBackoff = 50*time.Millisecond, 100*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	go c.Run(ctx)
	waitUntil(t, 10*time.Second, "a failed connection", func() bool { return c.Status().ConnectFailures >= 2 })
	cancel()
	c.Close()
	st := c.Status()
	b, _ := json.Marshal(st)
	if strings.Contains(string(b), "s3cret") || strings.Contains(logs.String(), "s3cret") {
		t.Errorf("password leaked:\nstatus %s\nlogs %s", b, logs.String())
	}
}

// TestSourceTimeoutBounds: zero or absurd timeouts are refused up front
// (read_timeout=0s used to panic in time.NewTicker, open_timeout=0
// abandoned every open).
func TestSourceTimeoutBounds(t *testing.T) {
	for _, q := range []string{"read_timeout=0s", "open_timeout=0", "read_timeout=10ms", "open_timeout=2h", "read_timeout=-1s"} {
		if _, err := ParseSource("file:///x.mp4?" + q); err == nil {
			t.Errorf("%s accepted", q)
		}
	}
	if s, err := ParseSource("file:///x.mp4?read_timeout=2s&open_timeout=30s"); err != nil || s.ReadTimeout != 2*time.Second {
		t.Errorf("sane timeouts: %+v %v", s, err)
	}
}

func TestParseSource(t *testing.T) {
	cases := []struct {
		uri      string
		kind     Kind
		pipeline string
		bad      bool
	}{
		{uri: "csi://0", kind: KindCSI, pipeline: "nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1920,height=1080,framerate=30/1,format=NV12 ! nvvidconv flip-method=0 ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1"},
		{uri: "csi://1?width=1280&height=720&fps=60&rotate=180", kind: KindCSI, pipeline: "nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=60/1,format=NV12 ! nvvidconv flip-method=2 ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1"},
		{uri: "v4l2:///dev/video0?width=640&height=480", kind: KindV4L2, pipeline: "v4l2src device=/dev/video0 ! video/x-raw,width=640,height=480 ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1"},
		{uri: "v4l2:///dev/video2?backend=v4l2", kind: KindV4L2},
		{uri: "v4l2:///dev/video0?width=1920&height=1080&fps=30&format=mjpeg&decoder=sw", kind: KindV4L2,
			pipeline: "v4l2src device=/dev/video0 ! image/jpeg,width=1920,height=1080,framerate=30/1 ! jpegdec ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1"},
		{uri: "v4l2:///dev/video1?format=mjpeg&decoder=hw&width=1280&height=720", kind: KindV4L2,
			pipeline: "v4l2src device=/dev/video1 ! image/jpeg,width=1280,height=720 ! jpegparse ! nvv4l2decoder mjpeg=1 ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1"},
		{uri: "v4l2:///dev/video0?format=h264", bad: true},
		{uri: "v4l2:///dev/video0?format=mjpeg&decoder=fast", bad: true},
		{uri: "v4l2:///dev/video0?format=mjpeg&backend=v4l2", bad: true},
		{uri: "file:///x.mp4?format=mjpeg", bad: true},
		{uri: "rtsp://user:pw@10.0.0.5:554/stream1?fps=5", kind: KindRTSP},
		{uri: "http://cam:8080/video.mjpg", kind: KindHTTP},
		{uri: "file:///data/x.mp4?loop=true", kind: KindFile},
		{uri: "gst://videotestsrc ! appsink", kind: KindGst, pipeline: "videotestsrc ! appsink"},
		{uri: "csi://zero", bad: true},
		{uri: "ftp://x/y", bad: true},
		{uri: "file:///x.mp4?flip=sideways", bad: true},
		{uri: "file:///x.mp4?colour=red", bad: true},
		{uri: "v4l2:///dev/video0?backend=dshow", bad: true},
		{uri: "", bad: true},
	}
	for _, tc := range cases {
		s, err := ParseSource(tc.uri)
		if tc.bad {
			if err == nil {
				t.Errorf("%q accepted", tc.uri)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.uri, err)
			continue
		}
		if s.Kind != tc.kind {
			t.Errorf("%q: kind %s, want %s", tc.uri, s.Kind, tc.kind)
		}
		if tc.pipeline != "" && s.Pipeline() != tc.pipeline {
			t.Errorf("%q: pipeline\n %s\nwant\n %s", tc.uri, s.Pipeline(), tc.pipeline)
		}
	}
}

func TestTileBoxesCoverFrame(t *testing.T) {
	tl := Tiling{Rows: 2, Cols: 3, Overlap: 0.2, Full: true}
	boxes := tl.Boxes(1920, 1080)
	if len(boxes) != 7 || boxes[0] != image.Rect(0, 0, 1920, 1080) {
		t.Fatalf("boxes %v", boxes)
	}
	covered := image.Rectangle{}
	for i, b := range boxes[1:] {
		covered = covered.Union(b)
		if i > 0 && boxes[i].Overlaps(b) == false && b.Min.Y == boxes[i].Min.Y {
			t.Errorf("neighbouring tiles %v and %v do not overlap", boxes[i], b)
		}
	}
	if covered != image.Rect(0, 0, 1920, 1080) {
		t.Errorf("tiles cover %v", covered)
	}
}

// TestResolveDecoder: decoder=auto decodes MJPEG in hardware exactly when
// the Jetson element exists.
func TestResolveDecoder(t *testing.T) {
	s, err := ParseSource("v4l2:///dev/video0?format=mjpeg")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		has  bool
		want string
	}{{true, "nvv4l2decoder"}, {false, "jpegdec"}} {
		var asked string
		r, err := s.ResolveDecoder(func(el string) (bool, error) { asked = el; return c.has, nil })
		if err != nil || asked != "nvv4l2decoder" || !strings.Contains(r.Pipeline(), c.want) {
			t.Errorf("element present=%v: asked %q, pipeline %s, err %v", c.has, asked, r.Pipeline(), err)
		}
	}
	if _, err := s.ResolveDecoder(func(string) (bool, error) { return false, errors.New("no gst-inspect") }); err == nil {
		t.Error("a failed element check was ignored")
	}
	raw, _ := ParseSource("v4l2:///dev/video0")
	if r, _ := raw.ResolveDecoder(func(string) (bool, error) { t.Error("asked for a raw camera"); return true, nil }); r.Pipeline() != raw.Pipeline() {
		t.Error("a raw camera's pipeline changed")
	}
}

// TestCSIHints: a CSI failure says what usually cures it.
func TestCSIHints(t *testing.T) {
	if e := csiHint(errors.New("open csi://0: OpenCV could not open it")).Error(); !strings.Contains(e, "Failed to create CaptureSession") || !strings.Contains(e, "systemctl restart nvargus-daemon") {
		t.Errorf("open failure: %s", e)
	}
	if e := csiHint(errors.New("no Argus socket " + argusSocket)).Error(); !strings.Contains(e, "PrivateTmp") || !strings.Contains(e, "nvargus-daemon") {
		t.Errorf("missing socket: %s", e)
	}
}
