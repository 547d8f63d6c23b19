package cpu

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/leafwatch/leafwatch/model"
)

// TestConcurrentSpinningPasses: small passes, which spin between pieces
// (spin.go), give the same probabilities bit for bit as passes that park,
// also with two of them in flight at once; and once they end nothing is
// left spinning.
func TestConcurrentSpinningPasses(t *testing.T) {
	defer func(b int) { spinBatch = b }(spinBatch)
	m, _ := model.NewRandom(model.TorchVision, 38, 4)
	c := NewClassifier(m, model.Options{MaxBatch: 2, Workers: 2})
	x := randInput(rand.New(rand.NewPCG(5, 5)), 2*m.InputLen())
	ctx := context.Background()
	run := func(n int) []float32 {
		p := make([]float32, n*38)
		if err := c.Probabilities(ctx, x, n, p); err != nil {
			t.Error(err)
		}
		return p
	}
	spinBatch = 0
	want1, want2 := run(1), run(2)
	spinBatch = 2
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 3 {
				n := 1 + (g+i)%2
				if got := run(n); !slices.Equal(got, map[int][]float32{1: want1, 2: want2}[n]) {
					t.Errorf("batch %d spinning: probabilities differ from a parked pass", n)
				}
			}
		}()
	}
	wg.Wait()
	if s := spinners.Load(); s != 0 {
		t.Errorf("%d passes still marked spinning after all returned", s)
	}
	// Nothing burns a core once the passes are over: a daemon between
	// frames uses no CPU.
	before := cpuTime(t)
	time.Sleep(300 * time.Millisecond)
	if used := cpuTime(t) - before; used > 30*time.Millisecond {
		t.Errorf("the process used %v of CPU in 300 ms idle after spinning passes", used)
	}
}

// cpuTime is the CPU time (user + system) this process has used.
func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
