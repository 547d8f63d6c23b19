package daemon

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/model/cpu"
)

// TestBatcherMergesAndSplits: requests that arrive while the engine is
// busy run as one call, and each camera gets its own images' answers —
// the same as alone, to float rounding.
func TestBatcherMergesAndSplits(t *testing.T) {
	if testing.Short() || os.Getenv("LEAFWATCH_EMULATED") != "" {
		t.Skip("AlexNet passes in -short mode or under emulation (the merging logic is the host's)")
	}
	m, _ := model.NewRandom(model.TorchVision, 5, 3)
	m.Meta.Labels = []string{"a", "b", "c", "d", "e"}
	e := &countingEngine{Classifier: cpu.NewClassifier(m, model.Options{MaxBatch: 16})}
	b := newBatcher()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.run(ctx)
	rng := rand.New(rand.NewPCG(1, 2))
	const cams, tiles = 4, 3
	xs := make([][]float32, cams)
	for i := range xs {
		xs[i] = make([]float32, tiles*m.InputLen())
		for j := range xs[i] {
			xs[i][j] = float32(rng.NormFloat64())
		}
	}
	alone := make([][]model.Prediction, cams)
	for i := range xs {
		alone[i], _ = e.Classifier.Classify(ctx, xs[i], tiles, 5)
	}
	e.hold = make(chan struct{})
	var wg sync.WaitGroup
	got := make([][]model.Prediction, cams)
	for i := range xs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := b.classify(ctx, e, xs[i], tiles, 5)
			if err != nil {
				t.Error(err)
			}
			got[i] = p
		}()
		if i == 0 {
			for e.calls.Load() == 0 { // the first is in the engine; the rest queue
				time.Sleep(time.Millisecond)
			}
		}
	}
	time.Sleep(100 * time.Millisecond)
	close(e.hold)
	wg.Wait()
	if c := e.calls.Load(); c != 2 {
		t.Errorf("%d engine calls for 4 cameras arriving while it was busy, want 2 (one alone, three merged)", c)
	}
	for i := range got {
		if len(got[i]) != tiles {
			t.Fatalf("camera %d: %d predictions", i, len(got[i]))
		}
		for j := range got[i] {
			for k, p := range got[i][j].Probs {
				if math.Abs(float64(p-alone[i][j].Probs[k])) > 1e-5 {
					t.Fatalf("camera %d tile %d class %d: %v merged, %v alone", i, j, k, p, alone[i][j].Probs[k])
				}
			}
		}
	}
}

// countingEngine counts calls and can hold the first until released.
type countingEngine struct {
	*cpu.Classifier
	calls atomic.Int64
	hold  chan struct{}
}

func (e *countingEngine) Classify(ctx context.Context, x []float32, n, topK int) ([]model.Prediction, error) {
	if e.calls.Add(1) == 1 && e.hold != nil {
		<-e.hold
	}
	return model.ClassifyWith(ctx, e, x, n, topK)
}

// BenchmarkMultiCameraThroughput: 4 cameras × 7 tiles (a 2×3 grid and the
// whole frame) sampling as fast as the engine allows, each calling the
// engine on its own (before) and through the batcher (after), in frames/s.
func BenchmarkMultiCameraThroughput(b *testing.B) {
	m, _ := model.NewRandom(model.TorchVision, 38, 3)
	const cams, tiles, frames = 4, 7, 6
	x := make([]float32, tiles*m.InputLen())
	for i := range x {
		x[i] = float32(i%97) / 97
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	measure := func(classify func() error) float64 {
		start := time.Now()
		var wg sync.WaitGroup
		for range cams {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range frames {
					if err := classify(); err != nil {
						b.Error(err)
					}
				}
			}()
		}
		wg.Wait()
		return float64(cams*frames) / time.Since(start).Seconds()
	}
	alone := cpu.NewClassifier(m, model.Options{MaxBatch: model.DefaultMaxBatch})
	merged := cpu.NewClassifier(m, model.Options{MaxBatch: 2 * model.DefaultMaxBatch})
	bt := newBatcher()
	go bt.run(ctx)
	alone.Classify(ctx, x, tiles, 3)
	merged.Classify(ctx, x, 2*tiles, 3)
	b.ResetTimer()
	for range b.N {
		before := measure(func() error { _, err := alone.Classify(ctx, x, tiles, 3); return err })
		after := measure(func() error { _, err := bt.classify(ctx, merged, x, tiles, 3); return err })
		b.ReportMetric(before, "frames/s_before")
		b.ReportMetric(after, "frames/s_after")
		b.ReportMetric(after/before, "ratio_after/before")
	}
}
