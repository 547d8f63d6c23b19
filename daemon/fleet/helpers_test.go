package fleet

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leafwatch/leafwatch/internal/bundle"
)

// The fleet's logic is tested against a fake host: "checkpoints" here are
// real safetensors headers (bundle reads and checks them) followed by a
// body that says which label the model answers, padded to a size. The
// daemon's tests run the same updater with real AlexNets and mosquitto.

var labels = []string{"Tomato___Late_blight", "Tomato___healthy", "not_a_leaf"}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// writeModel writes a checkpoint that answers label, padded to size bytes.
func writeModel(t *testing.T, path, answer string, size int) {
	t.Helper()
	lb, _ := json.Marshal(labels)
	hdr, _ := json.Marshal(map[string]any{"__metadata__": map[string]string{
		"format": "leafwatch-alexnet", "format_version": "1", "variant": "torchvision", "labels": string(lb),
		"input_size": "224", "resize": "256", "mean": "[0.485,0.456,0.406]", "std": "[0.229,0.224,0.225]",
		"created": "2026-12-01T00:00:00Z"}})
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, uint64(len(hdr)))
	b.Write(hdr)
	fmt.Fprintf(&b, "answers:%s;", answer)
	for b.Len() < size {
		b.WriteByte(byte(b.Len()))
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fakeModel answers one label for every example.
type fakeModel struct {
	version, sha, answer string
	fail                 bool
	closed               atomic.Bool
}

func (m *fakeModel) Version() string  { return m.version }
func (m *fakeModel) SHA256() string   { return m.sha }
func (m *fakeModel) Labels() []string { return labels }
func (m *fakeModel) Close()           { m.closed.Store(true) }
func (m *fakeModel) Predict(_ context.Context, ex []Example) ([]string, error) {
	out := make([]string, len(ex))
	for i, e := range ex {
		if _, err := e.Read(); err != nil {
			return nil, err
		}
		out[i] = m.answer
	}
	return out, nil
}

func loadFake(path string) (*fakeModel, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	_, rest, ok := bytes.Cut(b, []byte("answers:"))
	ans, _, ok2 := bytes.Cut(rest, []byte(";"))
	if !ok || !ok2 {
		return nil, fmt.Errorf("%s: not a test model", path)
	}
	sha, _, err := bundle.HashFile(path)
	if err != nil {
		return nil, err
	}
	return &fakeModel{version: sha[:12], sha: sha, answer: string(ans), fail: string(ans) == "crash"}, nil
}

// fakeHost serves a fakeModel and records what it published.
type fakeHost struct {
	t         *testing.T
	modelPath string
	mu        sync.Mutex
	serving   *fakeModel
	examples  []Example
	states    []State
	installs  int
}

func newHost(t *testing.T, dir, answer string) *fakeHost {
	h := &fakeHost{t: t, modelPath: filepath.Join(dir, "model.safetensors")}
	writeModel(t, h.modelPath, answer, 4096)
	m, err := loadFake(h.modelPath)
	if err != nil {
		t.Fatal(err)
	}
	h.serving = m
	return h
}

func (h *fakeHost) Serving() Model {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.serving
}

func (h *fakeHost) Load(_ context.Context, path string, m bundle.Manifest) (Candidate, error) {
	c, err := loadFake(path)
	if err != nil {
		return nil, err
	}
	if m.SHA256 != "" && m.SHA256 != c.sha {
		return nil, fmt.Errorf("does not match its manifest")
	}
	if c.fail {
		return nil, fmt.Errorf("test inference failed: CUDA context lost")
	}
	return c, nil
}

// Install checks that the file at the model path is the candidate: the
// updater moved it there first.
func (h *fakeHost) Install(c Candidate) error {
	sha, _, err := bundle.HashFile(h.modelPath)
	if err != nil {
		return err
	}
	if sha != c.SHA256() {
		return fmt.Errorf("the model path holds %.12s, not the candidate %s", sha, c.Version())
	}
	h.mu.Lock()
	h.serving = c.(*fakeModel)
	h.installs++
	h.mu.Unlock()
	return nil
}

func (h *fakeHost) Examples(context.Context) ([]Example, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.examples, nil
}

func (h *fakeHost) Publish(s State, _ bool) {
	h.mu.Lock()
	h.states = append(h.states, s)
	h.mu.Unlock()
}

func (h *fakeHost) last() State {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.states) == 0 {
		return State{}
	}
	return h.states[len(h.states)-1]
}

// label adds n labelled examples.
func (h *fakeHost) label(n int, label string, baseline bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := 0; i < n; i++ {
		h.examples = append(h.examples, Example{ID: fmt.Sprint(len(h.examples)), Label: label, Baseline: baseline,
			Read: func() ([]byte, error) { return []byte("jpeg"), nil }})
	}
}

// waitState waits for a published state satisfying ok.
func (h *fakeHost) waitState(t *testing.T, what string, ok func(State) bool) State {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		h.mu.Lock()
		for _, s := range h.states {
			if ok(s) {
				h.mu.Unlock()
				return s
			}
		}
		h.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no %s state; last: %+v", what, h.last())
	return State{}
}

// release is a signed model bundle on a file server.
type release struct {
	ckpt string
	ann  Announcement
}

// makeRelease writes a model answering answer, signs it with key (nil:
// unsigned) and announces it at srv.
func makeRelease(t *testing.T, dir, name, answer string, size int, key *bundle.Signer, srv *httptest.Server) release {
	t.Helper()
	ckpt := filepath.Join(dir, name)
	writeModel(t, ckpt, answer, size)
	if key != nil {
		if _, err := bundle.SignCheckpoint(key, ckpt, "test model "+answer); err != nil {
			t.Fatal(err)
		}
	} else if _, err := bundle.WriteManifest(ckpt, "unsigned "+answer, nil); err != nil {
		t.Fatal(err)
	}
	a, err := Announce(ckpt, srv.URL+"/"+name, key == nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return release{ckpt, a}
}

// fileServer serves dir as nginx would (Range, Last-Modified), with a
// switch that stops it answering.
type fileServer struct {
	*httptest.Server
	requests atomic.Int32
	ranged   atomic.Int32
	cutAt    atomic.Int64 // cut the next response after this many bytes
	stall    atomic.Bool  // send the header and a little, then nothing
}

func newFileServer(t *testing.T, dir string) *fileServer {
	fs := &fileServer{}
	files := http.FileServer(http.Dir(dir))
	fs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fs.requests.Add(1)
		if r.Header.Get("Range") != "" {
			fs.ranged.Add(1)
		}
		cut, stall := fs.cutAt.Swap(0), fs.stall.Swap(false)
		if cut > 0 || stall {
			// Headers as the file server sends them, then a cut
			// connection, or silence.
			path := filepath.Join(dir, strings.TrimPrefix(r.URL.Path, "/"))
			b, _ := os.ReadFile(path)
			st, _ := os.Stat(path)
			w.Header().Set("Content-Length", fmt.Sprint(len(b)))
			w.Header().Set("Last-Modified", st.ModTime().UTC().Format(http.TimeFormat))
			w.WriteHeader(200)
			if stall {
				w.Write(b[:1000])
				w.(http.Flusher).Flush()
				<-r.Context().Done()
				return
			}
			w.Write(b[:cut])
			w.(http.Flusher).Flush()
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return
		}
		files.ServeHTTP(w, r)
	}))
	t.Cleanup(fs.Close)
	return fs
}

func newSigner(t *testing.T, dir, name string) (*bundle.Signer, string) {
	t.Helper()
	pub, key, err := bundle.GenerateKey(filepath.Join(dir, name), "")
	if err != nil {
		t.Fatal(err)
	}
	s, err := bundle.LoadSigner(key, "")
	if err != nil {
		t.Fatal(err)
	}
	return s, pub
}

// startUpdater runs an updater over host until the test ends.
func startUpdater(t *testing.T, h *fakeHost, dir string, cfg Config) *Updater {
	t.Helper()
	u, err := New(Options{Config: cfg, Group: "default", Dir: filepath.Join(dir, "fleet"), ModelPath: h.modelPath, Host: h, Log: quiet, RetryWait: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { u.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return u
}

func (h *fakeHost) reset() {
	h.mu.Lock()
	h.states = nil
	h.mu.Unlock()
}
