//go:build cuda && cudaemu

package gpu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"testing"

	"gorgonia.org/cu"

	"github.com/leafwatch/leafwatch/internal/cudaemu"
	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/model/cpu"
)

// Under -tags 'cuda cudaemu' the fake driver in package cudaemu is linked
// into this test binary; TestMain builds the host kernels and the fake
// libraries before any test runs.

const emulated = true

var harness *cudaemu.Harness

func TestMain(m *testing.M) {
	h, err := cudaemu.Setup(KernelSource())
	if err != nil {
		fmt.Fprintln(os.Stderr, "cudaemu setup:", err)
		os.Exit(1)
	}
	harness = h
	code := m.Run()
	if d := cudaemu.Diagnostics(); len(d) > 0 && code != 0 {
		fmt.Fprintln(os.Stderr, "harness diagnostics:\n  "+strings.Join(d, "\n  "))
	}
	os.Exit(code)
}

// deviceCCs are the compute capabilities of Leafwatch's targets.
func deviceCCs() []int { return []int{53, 62, 72, 87, 90} }

// useCC makes the fake device report compute capability cc for one test.
func useCC(t testing.TB, cc int) {
	cudaemu.Configure(cudaemu.Device{Major: cc / 10, Minor: cc % 10})
	t.Cleanup(func() { cudaemu.Configure(cudaemu.Device{}) })
}

// checkTarget: the PTX handed to the driver was compiled for cc.
func checkTarget(t testing.TB, cc int) {
	t.Helper()
	if got, want := cudaemu.ReadStats().Target, fmt.Sprintf("sm_%d", cc); got != want {
		t.Errorf("kernels compiled for %s, want %s", got, want)
	}
}

// diagnostics logs what the fake driver refused, for a failing test.
func diagnostics(t *testing.T) {
	t.Cleanup(func() {
		if d := cudaemu.Diagnostics(); t.Failed() && len(d) > 0 {
			t.Log("harness diagnostics:\n  " + strings.Join(d, "\n  "))
		}
	})
}

// TestEmuCloseReopenNoLeaks: engines and trainers opened and closed over
// and over leave no context, allocation, module or cuBLAS handle behind,
// and free everything themselves rather than leaving it to the context's
// destruction.
func TestEmuCloseReopenNoLeaks(t *testing.T) {
	diagnostics(t)
	m := testModel(t, model.BVLC, 5, 2)
	base := cudaemu.ReadStats()
	x := randInput(2, m.InputLen(), 1)
	for i := 0; i < 5; i++ {
		e, err := New(m, model.Options{MaxBatch: 2}, quiet)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Probabilities(context.Background(), x, 2, make([]float32, 10)); err != nil {
			t.Fatal(err)
		}
		mid := cudaemu.ReadStats()
		if mid.Handles != base.Handles+1 || mid.Contexts != base.Contexts+1 {
			t.Fatalf("an open engine holds %d handles and %d contexts more", mid.Handles-base.Handles, mid.Contexts-base.Contexts)
		}
		e.Close()
		tr, err := NewTrainer(m, 2, OptimSettings{Log: quiet})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tr.Logits(0, x, 2); err != nil {
			t.Fatal(err)
		}
		tr.Close()
	}
	after := cudaemu.ReadStats()
	if after.Contexts != base.Contexts || after.Allocs != base.Allocs || after.Bytes != base.Bytes ||
		after.Modules != base.Modules || after.Handles != base.Handles {
		t.Errorf("after 5 open/close cycles: %+v, before: %+v", after, base)
	}
	if after.LeakedAtDestroy != base.LeakedAtDestroy {
		t.Errorf("%d allocations or modules were left for the context's destruction", after.LeakedAtDestroy-base.LeakedAtDestroy)
	}
}

// TestEmuStickyErrorFailsEngine: after an illegal address the engine says
// it has failed (model.ErrEngineFailed) at once on every call, closes
// cleanly, and a new engine works.
func TestEmuStickyErrorFailsEngine(t *testing.T) {
	m := testModel(t, model.TorchVision, 3, 2)
	e, err := New(m, model.Options{MaxBatch: 1}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	x, probs := make([]float32, m.InputLen()), make([]float32, 3)
	cudaemu.InjectSticky(700, 3)
	err = e.Probabilities(context.Background(), x, 1, probs)
	if !errors.Is(err, model.ErrEngineFailed) {
		t.Fatalf("after an illegal address: %v, want model.ErrEngineFailed", err)
	}
	before := cudaemu.ReadStats().Launches
	if err := e.Probabilities(context.Background(), x, 1, probs); !errors.Is(err, model.ErrEngineFailed) {
		t.Fatalf("second call: %v", err)
	}
	if n := cudaemu.ReadStats().Launches - before; n != 0 {
		t.Errorf("a failed engine still launched %d kernels", n)
	}
	if f := e.(*Engine).Failed(); f == nil {
		t.Error("Failed() is nil after a sticky error")
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	cudaemu.Diagnostics()
	e2, err := New(m, model.Options{MaxBatch: 1}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if err := e2.Probabilities(context.Background(), x, 1, probs); err != nil {
		t.Fatalf("a new engine after the failure: %v", err)
	}
}

// TestEmuContextIsPerThread: a device call from an OS thread without the
// engine's context fails as on a GPU; the engine's own calls make the
// context current wherever they run.
func TestEmuContextIsPerThread(t *testing.T) {
	m := testModel(t, model.TorchVision, 3, 2)
	e, err := New(m, model.Options{MaxBatch: 1}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	eng := e.(*Engine)
	done := make(chan error)
	go func() {
		runtime.LockOSThread() // a fresh goroutine; its thread may be any
		defer runtime.UnlockOSThread()
		if err := cuSetCurrentNone(); err != nil {
			done <- err
			return
		}
		_, err := eng.d.alloc(16)
		done <- err
	}()
	if err := <-done; err == nil {
		t.Error("allocating from a thread without the context succeeded")
	}
	cudaemu.Diagnostics()
	for i := 0; i < 4; i++ {
		go func() {
			done <- e.Probabilities(context.Background(), make([]float32, m.InputLen()), 1, make([]float32, 3))
		}()
		if err := <-done; err != nil {
			t.Fatalf("inference from another goroutine: %v", err)
		}
	}
}

// TestEmuNewerGPUClampsArch: a GPU newer than NVRTC 11.8 knows (sm_100)
// gets compute_90 PTX, which its driver JIT-compiles forward.
func TestEmuNewerGPUClampsArch(t *testing.T) {
	useCC(t, 100)
	var logs strings.Builder
	m := testModel(t, model.TorchVision, 3, 2)
	e, err := New(m, model.Options{MaxBatch: 1}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	checkTarget(t, 90)
	if !strings.Contains(logs.String(), "compute_90") || !strings.Contains(logs.String(), "JIT") {
		t.Errorf("the log does not say which architecture was chosen:\n%s", logs.String())
	}
	useCC(t, 30)
	if _, err := New(m, model.Options{}, quiet); err == nil || !strings.Contains(err.Error(), "older") {
		t.Errorf("sm_30: %v", err)
	}
}

// TestEmuBindsCUDA11To13: the binary, built against CUDA 11.8 headers,
// binds cuBLAS and NVRTC under the CUDA 11, 12 and 13 file names (with
// their version nodes), picks the newest the driver can run, and says
// clearly when none fits.
func TestEmuBindsCUDA11To13(t *testing.T) {
	t.Cleanup(func() { SetLibraryDirs(nil); cudaemu.Configure(cudaemu.Device{}) })
	m := testModel(t, model.BVLC, 4, 2)
	x := randInput(2, m.InputLen(), 3)
	want := make([]float32, 8)
	cpu.NewClassifier(m, model.Options{}).Probabilities(context.Background(), x, 2, want)
	all := []string{harness.LibDir(11), harness.LibDir(12), harness.LibDir(13)}
	for _, c := range []struct {
		name   string
		dirs   []string
		driver int
		major  string
	}{
		{"cuda11", all[:1], 11040, "11"},
		{"cuda12", all[1:2], 12020, "12"},
		{"cuda13", all[2:], 13000, "13"},
		{"newest-the-driver-runs", all, 12060, "12"},
		{"driver13-all", all, 13000, "13"},
	} {
		t.Run(c.name, func(t *testing.T) {
			SetLibraryDirs(c.dirs)
			cudaemu.Configure(cudaemu.Device{DriverVersion: c.driver})
			var logs strings.Builder
			e, err := New(m, model.Options{MaxBatch: 2}, slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			got := make([]float32, 8)
			if err := e.Probabilities(context.Background(), x, 2, got); err != nil {
				t.Fatal(err)
			}
			if d := maxAbsDiff(got, want); d > 1e-4 {
				t.Errorf("probabilities differ by %g", d)
			}
			blas, nvrtc := "libcublas.so."+c.major, "libnvrtc.so."+c.major
			if c.major == "11" {
				nvrtc = "libnvrtc.so.11.2"
			}
			for _, f := range []string{blas, nvrtc} {
				if !strings.Contains(logs.String(), f) {
					t.Errorf("log does not name %s:\n%s", f, logs.String())
				}
			}
		})
	}
	SetLibraryDirs(all[1:2])
	cudaemu.Configure(cudaemu.Device{DriverVersion: 11040})
	_, err := New(m, model.Options{}, quiet)
	if err == nil || !strings.Contains(err.Error(), "newer than the driver") {
		t.Errorf("CUDA 12 libraries on a CUDA 11.4 driver: %v", err)
	}
	SetLibraryDirs([]string{t.TempDir()})
	_, err = New(m, model.Options{}, quiet)
	if err == nil || !strings.Contains(err.Error(), "no usable cuBLAS") {
		t.Errorf("no libraries: %v", err)
	}
	// (That "auto" then serves on the CPU is package engine's emu test.)
}

// TestEmuNoDevice: a driver without devices makes auto pick the CPU and
// cuda fail with the reason.
func TestEmuNoDevice(t *testing.T) {
	cudaemu.Configure(cudaemu.Device{NoDevice: true})
	t.Cleanup(func() { cudaemu.Configure(cudaemu.Device{}) })
	m := testModel(t, model.TorchVision, 3, 2)
	if _, err := New(m, model.Options{}, quiet); err == nil || !strings.Contains(err.Error(), "no CUDA device") {
		t.Errorf("cuda without a device: %v", err)
	}
}

// cuSetCurrentNone clears the calling thread's context.
func cuSetCurrentNone() error { return cu.SetCurrentContext(cu.CUContext{}) }
