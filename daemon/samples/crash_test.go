package samples

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"github.com/leafwatch/leafwatch/internal/selfexec"
)

// TestMain lets the test binary run as a writer that keeps samples until
// it is killed (TestKill9WhileWriting).
func TestMain(m *testing.M) {
	if dir := os.Getenv("LEAFWATCH_SAMPLES_WRITER"); dir != "" {
		keepWriting(dir)
		return
	}
	os.Exit(m.Run())
}

// keepWriting offers a new frame with four uncertain regions every few
// milliseconds, forever.
func keepWriting(dir string) {
	st, err := Open(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cfg := DefaultConfig()
	cfg.BaselineEvery, cfg.MaxPerHour, cfg.MaxPerFrame = 0, 3600, 4
	k := NewKeeper(st, map[string]Config{"cam": cfg}, Options{})
	if err := k.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tb := &testing.T{}
	for i := uint64(1); ; i++ {
		m := frame(tb, 640, 480, i)
		regions := make([]Region, 4)
		for j := range regions {
			regions[j] = region(quad[j], scored("Tomato___healthy", 0.3, "Tomato___Late_blight", 0.25))
		}
		offerOne(k, "cam", &m, time.Now(), regions...)
		m.Close()
		time.Sleep(2 * time.Millisecond)
	}
}

// TestKill9WhileWriting: a process keeping samples is killed (SIGKILL) at
// moments in the middle of its writes, three times; after each, the next
// start leaves no record without its files and no file without a record,
// and the database is intact.
func TestKill9WhileWriting(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills writer processes")
	}
	dir := filepath.Join(t.TempDir(), "samples")
	ctx := context.Background()
	total := 0
	for round := 0; round < 3; round++ {
		cmd := selfexec.Command("-test.run=^$")
		cmd.Env = append(os.Environ(), "LEAFWATCH_SAMPLES_WRITER="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Wait for some samples, then kill at an arbitrary moment.
		waitFor(t, "the writer's samples", func() bool {
			st, err := OpenExisting(dir)
			if err != nil {
				return false
			}
			defer st.Close()
			n, _ := st.Count(ctx, Filter{})
			return n > total+8
		})
		time.Sleep(time.Duration(7+13*round) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if s := stderr.String(); s != "" && !strings.Contains(s, "signal: killed") {
			t.Logf("writer stderr: %s", s)
		}
		st, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := st.Recover(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var check string
		st.db.QueryRow("PRAGMA integrity_check").Scan(&check)
		if check != "ok" {
			t.Fatalf("round %d: integrity_check: %s", round, check)
		}
		list, _ := st.List(ctx, Filter{})
		want := map[string]bool{}
		for _, s := range list {
			want[s.File], want[s.FrameFile] = true, true
		}
		have := files(t, st)
		for f := range want {
			if !have[f] {
				t.Errorf("round %d: record file %s is missing", round, f)
			}
		}
		for f := range have {
			if !want[f] {
				t.Errorf("round %d: file %s has no record", round, f)
			}
		}
		t.Logf("round %d: %d samples, %d files; cleaned up %+v", round, len(list), len(have), rep)
		total = len(list)
		st.Close()
	}
}

// mountTmpfs mounts a tmpfs of size bytes on dir (root only).
func mountTmpfs(t *testing.T, dir string, size int) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a full disk is a small tmpfs here, and mounting one needs root")
	}
	os.MkdirAll(dir, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
}

// syncBuf is a log destination safe for the writer goroutine.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestFullAndReadOnlyDisk: on a full disk and then a read-only one, keeping
// fails without stopping anything: every failure is counted, the log says
// so once, offers keep returning, and what was kept before is intact.
func TestFullAndReadOnlyDisk(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "samples")
	mountTmpfs(t, dir, 1<<20)
	ctx := context.Background()
	st, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cfg := DefaultConfig()
	cfg.BaselineEvery, cfg.MaxPerHour, cfg.MaxPerFrame = 0, 3600, 4
	met := newCounting()
	logs := &syncBuf{}
	k := NewKeeper(st, map[string]Config{"cam": cfg}, Options{Metrics: met, Log: slog.New(slog.NewTextHandler(logs, nil))})
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	offer := func(seed uint64) {
		m := frame(t, 640, 480, seed)
		noise := gocv.NewMatWithSize(480, 640, gocv.MatTypeCV8UC3)
		gocv.RandU(&noise, gocv.NewScalar(0, 0, 0, 0), gocv.NewScalar(60, 60, 60, 0))
		gocv.Add(m, noise, &m) // noise: large JPEGs, as real frames make
		noise.Close()
		regions := make([]Region, 4)
		for j := range regions {
			regions[j] = region(quad[j], scored("Tomato___healthy", 0.3, "Tomato___Late_blight", 0.25))
		}
		offerOne(k, "cam", &m, t0.Add(time.Duration(seed)*time.Second), regions...)
		m.Close()
		waitFor(t, "the writer", func() bool { return len(k.cams["cam"].pool) == 2 })
	}
	// Noisy 320×240 regions are tens of kB each: 1 MB fills in a few frames.
	for i := uint64(1); i <= 12; i++ {
		offer(i)
	}
	failed := met.get(func(m *countingMetrics) int { return m.failed })
	if failed == 0 {
		t.Fatal("no write failure counted on a full disk")
	}
	kept, _ := st.Count(ctx, Filter{})
	if kept == 0 {
		t.Fatal("nothing was kept before the disk filled")
	}
	if n := strings.Count(logs.String(), "cannot keep samples"); n != 1 {
		t.Errorf("the failure was logged %d times, want once\n%s", n, logs.String())
	}
	// Read-only (the images' folder, bound read-only over itself: the
	// database's files are open and a busy mount cannot be remounted): the
	// same, and nothing kept disappears. Room is made first, so that what
	// fails is the read-only folder, not the full disk.
	list, _ := st.List(ctx, Filter{})
	var ids []string
	for _, s := range list[:len(list)/2] {
		ids = append(ids, s.ID)
	}
	st.Delete(ctx, ids)
	kept -= len(ids)
	images := filepath.Join(dir, "images")
	for _, args := range [][]string{{"--bind", images, images}, {"-o", "remount,ro,bind", images}} {
		if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
			t.Fatalf("mount %v: %v %s", args, err, out)
		}
	}
	t.Cleanup(func() { exec.Command("umount", "-l", images).Run() })
	for i := uint64(20); i < 23; i++ {
		offer(i)
	}
	if met.get(func(m *countingMetrics) int { return m.failed }) <= failed {
		t.Error("no write failure counted on a read-only disk")
	}
	if n, err := st.Count(ctx, Filter{}); err != nil || n != kept {
		t.Errorf("%d samples readable on the read-only disk (%v), want %d", n, err, kept)
	}
	t.Logf("kept %d, failures %d", kept, met.get(func(m *countingMetrics) int { return m.failed }))
}
