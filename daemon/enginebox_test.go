package daemon

import (
	"sync"
	"testing"

	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/model/cpu"
)

// TestReplacedEngineFreedByItsLastSample: a reload during a sample must
// not free the engine under the sample, and must free it (and hand the
// memory back) as soon as that sample ends — not at some later GC.
func TestReplacedEngineFreedByItsLastSample(t *testing.T) {
	m, err := model.NewRandom(model.TorchVision, 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	oldE := &failingEngine{inner: cpu.NewClassifier(m, model.Options{}), after: 1 << 30}
	newE := &failingEngine{inner: cpu.NewClassifier(m, model.Options{}), after: 1 << 30}
	d := &Daemon{}
	d.serving.Store(newEngineBox(oldE))

	inUse := d.acquireEngine() // a sample in flight
	if inUse.e != oldE {
		t.Fatal("acquired something other than the serving engine")
	}
	d.serving.Swap(newEngineBox(newE)).retire() // a reload meanwhile
	if oldE.closed.Load() {
		t.Fatal("the old engine was freed while a sample used it")
	}
	if b := d.acquireEngine(); b.e != newE {
		t.Error("a sample after the swap got the old engine")
	} else {
		b.release()
	}
	inUse.release()
	if !oldE.closed.Load() {
		t.Fatal("the old engine was not freed when its last sample ended")
	}
	if newE.closed.Load() {
		t.Fatal("the serving engine was freed")
	}

	// Idle at the swap: freed at once.
	d.serving.Swap(newEngineBox(oldE)).retire()
	if !newE.closed.Load() {
		t.Error("an idle replaced engine was not freed at the swap")
	}
}

// TestEngineBoxConcurrentSwaps: many samples and reloads at once free
// every replaced engine exactly when unused, never the serving one. Run
// with -race.
func TestEngineBoxConcurrentSwaps(t *testing.T) {
	m, err := model.NewRandom(model.TorchVision, 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	mk := func() *failingEngine {
		return &failingEngine{inner: cpu.NewClassifier(m, model.Options{}), after: 1 << 30}
	}
	d := &Daemon{}
	d.serving.Store(newEngineBox(mk()))
	var all []*failingEngine
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				b := d.acquireEngine()
				if b.e.(*failingEngine).closed.Load() {
					t.Error("a sample got a freed engine")
				}
				b.release()
			}
		}()
	}
	for i := 0; i < 50; i++ {
		e := mk()
		mu.Lock()
		all = append(all, e)
		mu.Unlock()
		d.serving.Swap(newEngineBox(e)).retire()
	}
	wg.Wait()
	serving := d.engine()
	for _, e := range all {
		if closed := e.closed.Load(); closed == (e == serving) {
			t.Errorf("engine %p: closed %v, serving %v", e, closed, e == serving)
		}
	}
}
