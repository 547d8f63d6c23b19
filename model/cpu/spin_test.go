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

// TestSpinGraceFromTheMeasuredWake: the spin bound follows the wake-up the
// pool measured at start, within its limits.
func TestSpinGraceFromTheMeasuredWake(t *testing.T) {
	for _, tc := range []struct{ wake, want time.Duration }{
		{2 * time.Microsecond, minSpin}, // bare metal: hardly any spin
		{15 * time.Microsecond, 30 * time.Microsecond},
		{100 * time.Microsecond, 200 * time.Microsecond}, // this VM: the old constant
		{200 * time.Microsecond, 400 * time.Microsecond},
		{3 * time.Millisecond, maxSpin}, // an overloaded host: spinning cannot save that
	} {
		if got := spinGraceFor(tc.wake); got != tc.want {
			t.Errorf("wake %v: spin %v, want %v", tc.wake, got, tc.want)
		}
	}
	if workers() < 2 {
		t.Skip("one core: nothing spins, nothing measured")
	}
	if wakeMeasured <= 0 || wakeMeasured > 50*time.Millisecond {
		t.Errorf("measured wake-up %v", wakeMeasured)
	}
	if spinGrace != spinGraceFor(wakeMeasured) {
		t.Errorf("spin %v after a measured wake-up of %v, want %v", spinGrace, wakeMeasured, spinGraceFor(wakeMeasured))
	}
	t.Logf("wake-up %v, spin %v", wakeMeasured, spinGrace)
}

// BenchmarkSpinGrace: batch 1 (fp16 FC weights) with the spin bound at
// fixed values and at the one measured at start, in alternating blocks in
// one process; ms/image medians per bound. It checks the measured bound
// against the alternatives on whatever machine runs it.
func BenchmarkSpinGrace(b *testing.B) {
	m, _ := model.NewRandom(model.TorchVision, 38, 4)
	c := NewClassifier(m, model.Options{MaxBatch: 1, Precision: model.FP16})
	x := randInput(rand.New(rand.NewPCG(5, 5)), m.InputLen())
	p := make([]float32, 38)
	ctx := context.Background()
	measured := spinGrace
	defer func() { spinGrace = measured }()
	b.Logf("%s", ThreadsInfo())
	bounds := []time.Duration{minSpin, 200 * time.Microsecond, measured, maxSpin, 2 * time.Millisecond}
	res := make([][]float64, len(bounds))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j, g := range bounds {
			spinGrace = g
			time.Sleep(20 * time.Millisecond) // a frame's gap: the threads park
			c.Probabilities(ctx, x, 1, p)
			t0 := time.Now()
			for range 5 {
				c.Probabilities(ctx, x, 1, p)
			}
			res[j] = append(res[j], float64(time.Since(t0).Microseconds())/5000)
		}
	}
	for j, g := range bounds {
		slices.Sort(res[j])
		name := g.String()
		if j == 2 {
			name = "measured"
		}
		b.ReportMetric(res[j][len(res[j])/2], "ms@"+name)
	}
}
