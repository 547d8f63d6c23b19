package fetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func payload(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// server serves data as a static file server does (Range, If-Range on
// Last-Modified, no ETag: Go's http.FileServer, nginx's defaults differ
// only in adding an ETag), with faults to order.
type server struct {
	data     atomic.Value // []byte
	modTime  atomic.Int64
	cutAt    atomic.Int64 // cut the next response after this many bytes
	stallAt  atomic.Int64 // stop sending (but keep the connection) after this many bytes
	noRange  atomic.Bool  // answer every request with the whole file
	status   atomic.Int32 // answer with this status instead
	requests atomic.Int32
	ranged   atomic.Int32
	release  chan struct{}
	resume   chan struct{} // a stalled response goes on when this is closed
}

func newServer(t *testing.T, data []byte) (*server, *httptest.Server) {
	s := &server{release: make(chan struct{}), resume: make(chan struct{})}
	s.data.Store(data)
	s.modTime.Store(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).Unix())
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		if c := s.status.Load(); c != 0 {
			http.Error(w, "nope", int(c))
			return
		}
		if r.Header.Get("Range") != "" {
			s.ranged.Add(1)
			if s.noRange.Load() {
				r.Header.Del("Range")
			}
		}
		data := s.data.Load().([]byte)
		if n := s.cutAt.Swap(0); n > 0 {
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
			w.Header().Set("Last-Modified", time.Unix(s.modTime.Load(), 0).UTC().Format(http.TimeFormat))
			w.WriteHeader(200)
			w.Write(data[:n])
			w.(http.Flusher).Flush()
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return
		}
		if n := s.stallAt.Swap(0); n > 0 {
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
			w.Header().Set("Last-Modified", time.Unix(s.modTime.Load(), 0).UTC().Format(http.TimeFormat))
			w.WriteHeader(200)
			w.Write(data[:n])
			w.(http.Flusher).Flush()
			select {
			case <-s.release:
			case <-r.Context().Done():
			case <-s.resume:
				w.Write(data[n:])
			}
			return
		}
		http.ServeContent(w, r, "model.safetensors", time.Unix(s.modTime.Load(), 0), bytes.NewReader(data))
	}))
	t.Cleanup(func() { close(s.release); hs.Close() })
	return s, hs
}

func TestResumesWhereItStopped(t *testing.T) {
	data := payload(3 << 20)
	s, hs := newServer(t, data)
	part := filepath.Join(t.TempDir(), "model.part")
	req := Request{URL: hs.URL, Partial: part, Client: hs.Client(), Size: int64(len(data)), Log: quiet}
	s.cutAt.Store(1 << 20)
	err := Once(context.Background(), req)
	if err == nil || !strings.Contains(err.Error(), "of 3145728 bytes") {
		t.Fatalf("a cut download: %v", err)
	}
	if st, _ := os.Stat(part); st.Size() < 1<<19 {
		t.Fatalf("only %d bytes kept", st.Size())
	}
	var last int64
	req.Progress = func(have, total int64) { last = have }
	if err := Once(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(part)
	if !bytes.Equal(got, data) || s.ranged.Load() != 1 || last != int64(len(data)) {
		t.Fatalf("resumed: equal %v, %d ranged requests, progress %d", bytes.Equal(got, data), s.ranged.Load(), last)
	}
	// Complete already: no request at all.
	before := s.requests.Load()
	if err := Once(context.Background(), req); err != nil || s.requests.Load() != before {
		t.Errorf("a complete file fetched again: %v", err)
	}
}

func TestStartsOverWhenTheFileChanged(t *testing.T) {
	data := payload(2 << 20)
	s, hs := newServer(t, data)
	part := filepath.Join(t.TempDir(), "model.part")
	req := Request{URL: hs.URL, Partial: part, Client: hs.Client(), Log: quiet}
	s.cutAt.Store(1 << 20)
	Once(context.Background(), req)
	newer := payload(2<<20 + 7)
	newer[0] ^= 1
	s.data.Store(newer)
	s.modTime.Add(60)
	if err := Once(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(part); !bytes.Equal(got, newer) {
		t.Fatal("a resume spliced two versions of the file")
	}
	// A server that ignores Range: the whole file again, not appended.
	Discard(part)
	s.data.Store(data)
	s.cutAt.Store(1 << 20)
	s.noRange.Store(true)
	Once(context.Background(), req)
	if err := Once(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(part); !bytes.Equal(got, data) {
		t.Fatal("a server without Range support: the file is not whole")
	}
}

func TestRefusals(t *testing.T) {
	data := payload(1 << 20)
	s, hs := newServer(t, data)
	dir := t.TempDir()
	cases := []struct {
		name   string
		req    Request
		status int
		want   error
		perm   bool
	}{
		{"larger than allowed", Request{MaxBytes: 1000}, 0, ErrTooLarge, true},
		{"other size than announced", Request{Size: 12345}, 0, nil, true},
		{"not found", Request{}, 404, nil, true},
		{"forbidden", Request{}, 403, nil, true},
		{"server error (retried)", Request{}, 503, nil, false},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s.status.Store(int32(c.status))
			r := c.req
			r.URL, r.Partial, r.Client, r.Log = hs.URL, filepath.Join(dir, fmt.Sprint(i)), hs.Client(), quiet
			err := Once(context.Background(), r)
			var perm *PermanentError
			if err == nil || errors.As(err, &perm) != c.perm || (c.want != nil && !errors.Is(err, c.want)) {
				t.Fatalf("got %v (permanent %v), want %v permanent %v", err, errors.As(err, &perm), c.want, c.perm)
			}
			var se *StatusError
			if c.status != 0 && (!errors.As(err, &se) || se.Code != c.status) {
				t.Errorf("status not reported: %v", err)
			}
		})
	}
	// Retry gives up at once on a permanent error, retries a transient one.
	s.status.Store(404)
	before := s.requests.Load()
	if err := Retry(context.Background(), Request{URL: hs.URL, Partial: filepath.Join(dir, "r"), Client: hs.Client(), Log: quiet}, 3, time.Millisecond); err == nil || s.requests.Load()-before != 1 {
		t.Errorf("404 retried: %d requests", s.requests.Load()-before)
	}
	s.status.Store(503)
	before = s.requests.Load()
	Retry(context.Background(), Request{URL: hs.URL, Partial: filepath.Join(dir, "r"), Client: hs.Client(), Log: quiet}, 2, time.Millisecond)
	if s.requests.Load()-before != 3 {
		t.Errorf("503: %d requests, want 3", s.requests.Load()-before)
	}
}

func TestStalledServer(t *testing.T) {
	data := payload(1 << 20)
	s, hs := newServer(t, data)
	part := filepath.Join(t.TempDir(), "model.part")
	s.stallAt.Store(100 << 10)
	t0 := time.Now()
	err := Once(context.Background(), Request{URL: hs.URL, Partial: part, Client: hs.Client(), Stall: 300 * time.Millisecond, Log: quiet})
	if !errors.Is(err, ErrStalled) || time.Since(t0) > 10*time.Second {
		t.Fatalf("a stalled server: %v after %v", err, time.Since(t0))
	}
	// What arrived before the stall is kept and resumed.
	if err := Once(context.Background(), Request{URL: hs.URL, Partial: part, Client: hs.Client(), Log: quiet}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(part); !bytes.Equal(got, data) || s.ranged.Load() != 1 {
		t.Errorf("after a stall: whole %v, ranged %d", bytes.Equal(got, data), s.ranged.Load())
	}
}

func TestFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a full disk is a small tmpfs here, and mounting one needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	data := payload(3 << 20)
	_, hs := newServer(t, data)
	// Checked before writing: nothing is written.
	err := Once(context.Background(), Request{URL: hs.URL, Partial: filepath.Join(dir, "a"), Client: hs.Client(), Log: quiet})
	var perm *PermanentError
	if !errors.Is(err, ErrNoSpace) || !errors.As(err, &perm) || !strings.Contains(err.Error(), "MB free") {
		t.Fatalf("too little space: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "a")); err == nil {
		t.Error("a download that cannot fit was started")
	}
	// The space goes while writing (something else filled the disk).
	small := payload(1 << 20)
	s2, hs2 := newServer(t, small)
	s2.stallAt.Store(64 << 10)
	done := make(chan error)
	go func() {
		done <- Once(context.Background(), Request{URL: hs2.URL, Partial: filepath.Join(dir, "b"), Client: hs2.Client(), Log: quiet})
	}()
	time.Sleep(300 * time.Millisecond)
	os.WriteFile(filepath.Join(dir, "filler"), payload(1<<20+512<<10), 0o644)
	close(s2.resume)
	if err := <-done; !errors.Is(err, ErrNoSpace) || !errors.As(err, &perm) {
		t.Fatalf("the disk filled while writing: %v", err)
	}
}
