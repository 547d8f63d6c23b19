package cpu

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/leafwatch/leafwatch/model"
)

// TestInferenceAllocatesNothing: once warm, a forward pass must not create
// garbage (the TapeMachine defect in DESIGN.md is what this guards against).
func TestInferenceAllocatesNothing(t *testing.T) {
	m := testModel(t, smallSpec(), 1)
	c := NewClassifier(m, model.Options{MaxBatch: 4})
	x := randInput(rand.New(rand.NewPCG(1, 1)), 4*m.InputLen())
	probs := make([]float32, 4*m.Classes())
	ctx := context.Background()
	c.Probabilities(ctx, x, 4, probs)
	if a := testing.AllocsPerRun(20, func() { c.Probabilities(ctx, x, 4, probs) }); a != 0 {
		t.Fatalf("%v allocations per inference", a)
	}
}

// TestConcurrentClassifySharesWeights runs many goroutines over one model and
// checks every result equals the single-threaded one. Run with -race.
func TestConcurrentClassifySharesWeights(t *testing.T) {
	m := testModel(t, smallSpec(), 2)
	const imgs = 6
	x := randInput(rand.New(rand.NewPCG(2, 2)), imgs*m.InputLen())
	want := make([]float32, imgs*m.Classes())
	ctx := context.Background()
	if err := NewClassifier(m, model.Options{MaxBatch: 2}).Probabilities(ctx, x, imgs, want); err != nil {
		t.Fatal(err)
	}
	c := NewClassifier(m, model.Options{MaxBatch: 2, Workers: 3})
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got := make([]float32, len(want))
			for i := 0; i < 5; i++ {
				if err := c.Probabilities(ctx, x, imgs, got); err != nil {
					errs <- err.Error()
					return
				}
				for j := range got {
					if got[j] != want[j] {
						errs <- "concurrent result differs"
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}

func TestClassifyTopK(t *testing.T) {
	m := testModel(t, smallSpec(), 3)
	m.Meta.Labels = []string{"a", "b", "c", "d", "e"}
	c := NewClassifier(m, model.Options{})
	x := randInput(rand.New(rand.NewPCG(3, 3)), 2*m.InputLen())
	preds, err := c.Classify(context.Background(), x, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range preds {
		if len(p.Top) != 3 {
			t.Fatalf("top-k length %d", len(p.Top))
		}
		var sum float32
		for _, v := range p.Probs {
			sum += v
		}
		if sum < 0.999 || sum > 1.001 {
			t.Errorf("probabilities sum to %v", sum)
		}
		for i := 1; i < 3; i++ {
			if p.Top[i].Prob > p.Top[i-1].Prob {
				t.Errorf("top-k not sorted: %+v", p.Top)
			}
		}
		if p.Top[0].Label != m.Meta.Labels[p.Top[0].Index] || p.Top[0].Prob != p.Probs[p.Top[0].Index] {
			t.Errorf("top-1 %+v does not match probs", p.Top[0])
		}
	}
	if _, err := c.Classify(context.Background(), x[:10], 2, 3); err == nil {
		t.Error("short input accepted")
	}
}
