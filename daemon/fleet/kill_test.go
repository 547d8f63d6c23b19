package fleet

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// The helper process of TestKilledDownloadResumes: an updater over a fake
// host, downloading what FLEET_HELPER_ANNOUNCEMENT announces until killed.
func TestMain(m *testing.M) {
	if dir := os.Getenv("FLEET_HELPER_DIR"); dir != "" {
		h := &fakeHost{modelPath: filepath.Join(dir, "model.safetensors")}
		var err error
		if h.serving, err = loadFake(h.modelPath); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		cfg := DefaultConfig()
		cfg.TrustedKeys = []string{os.Getenv("FLEET_HELPER_KEY")}
		u, err := New(Options{Config: cfg, Group: "default", Dir: filepath.Join(dir, "fleet"), ModelPath: h.modelPath, Host: h, Log: quiet})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		b, _ := os.ReadFile(filepath.Join(dir, "announcement.json"))
		u.Offer(b)
		u.Run(context.Background()) // until killed
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// slowWriter makes the file server send at about 2 MB/s.
type slowWriter struct{ http.ResponseWriter }

func (w slowWriter) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		k := min(len(b), 16<<10)
		m, err := w.ResponseWriter.Write(b[:k])
		n += m
		if err != nil {
			return n, err
		}
		w.ResponseWriter.(http.Flusher).Flush()
		b = b[k:]
		time.Sleep(8 * time.Millisecond)
	}
	return n, nil
}

// TestKilledDownloadResumes kills (SIGKILL) a process in the middle of a
// download; the next start resumes the partial file instead of starting
// over, and installs the model.
func TestKilledDownloadResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("a 6 MB download at 2 MB/s")
	}
	dir, srvDir := t.TempDir(), t.TempDir()
	h := newHost(t, dir, healthy)
	key, pub := newSigner(t, t.TempDir(), "release")
	fs := newFileServer(t, srvDir)
	inner := fs.Config.Handler
	fs.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { inner.ServeHTTP(slowWriter{w}, r) })
	r := makeRelease(t, srvDir, "m.safetensors", blight, 6<<20, key, fs.Server)
	os.WriteFile(filepath.Join(dir, "announcement.json"), r.ann.Marshal(), 0o644)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "FLEET_HELPER_DIR="+dir, "FLEET_HELPER_KEY="+pub)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	part := filepath.Join(dir, "fleet", "download", r.ann.SHA256+".part")
	deadline := time.Now().Add(20 * time.Second)
	for {
		if st, err := os.Stat(part); err == nil && st.Size() > 1<<20 {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("the helper never got 1 MB into the download")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Kill() // SIGKILL: no cleanup runs
	cmd.Wait()
	st, _ := os.Stat(part)
	had := st.Size()
	if h.Serving().Version() != "" && had >= 6<<20 {
		t.Fatalf("the download finished before the kill (%d bytes)", had)
	}
	fs.ranged.Store(0)
	cfg := DefaultConfig()
	cfg.TrustedKeys = []string{pub}
	u := startUpdater(t, h, dir, cfg)
	u.Offer(r.ann.Marshal()) // the retained announcement, at the next start
	h.waitState(t, "installed", func(s State) bool { return s.State == StateInstalled })
	if fs.ranged.Load() == 0 {
		t.Errorf("the restart downloaded again from the start (it had %d bytes)", had)
	}
	t.Logf("killed with %d of %d bytes; resumed with a Range request and installed", had, 6<<20)
}
