package samples

import (
	"context"
	"fmt"
	"image"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"github.com/leafwatch/leafwatch/internal/fieldset"
)

// frame draws a w×h BGR frame whose content depends only on seed: blocks
// of random colour, so two seeds give frames far apart in dHash and the
// same seed the same frame.
func frame(t testing.TB, w, h int, seed uint64) gocv.Mat {
	t.Helper()
	m := gocv.NewMatWithSize(h, w, gocv.MatTypeCV8UC3)
	rng := rand.New(rand.NewPCG(seed, 7))
	const block = 16
	for y := 0; y < h; y += block {
		for x := 0; x < w; x += block {
			c := gocv.NewScalar(float64(rng.IntN(256)), float64(rng.IntN(256)), float64(rng.IntN(256)), 0)
			roi := m.Region(image.Rect(x, y, min(x+block, w), min(y+block, h)))
			roi.SetTo(c)
			roi.Close()
		}
	}
	return m
}

// scored builds a top list from label/probability pairs.
func scored(pairs ...any) []fieldset.Scored {
	var out []fieldset.Scored
	for i := 0; i+1 < len(pairs); i += 2 {
		out = append(out, fieldset.Scored{Label: pairs[i].(string), Prob: float32(pairs[i+1].(float64))})
	}
	return out
}

// region is a region with a top class decided against threshold 0.7.
func region(box image.Rectangle, top []fieldset.Scored) Region {
	r := Region{Box: box, Kind: "tile", Top: top, Threshold: 0.7, Decided: top[0].Label}
	if top[0].Prob < 0.7 {
		r.Decided = Uncertain
	}
	r.Disease = r.Decided != Uncertain && r.Decided != fieldset.NotALeaf && !isHealthy(r.Decided)
	return r
}

func isHealthy(l string) bool { return len(l) > 7 && l[len(l)-7:] == "healthy" }

// countingMetrics records what a keeper reports.
type countingMetrics struct {
	mu      sync.Mutex
	kept    map[string]int
	skipped map[string]int
	evicted int
	failed  int
	full    bool
}

func newCounting() *countingMetrics {
	return &countingMetrics{kept: map[string]int{}, skipped: map[string]int{}}
}

func (m *countingMetrics) Kept(_, rule string) { m.mu.Lock(); m.kept[rule]++; m.mu.Unlock() }
func (m *countingMetrics) Skipped(_, reason string) {
	m.mu.Lock()
	m.skipped[reason]++
	m.mu.Unlock()
}
func (m *countingMetrics) Evicted(n int)     { m.mu.Lock(); m.evicted += n; m.mu.Unlock() }
func (m *countingMetrics) WriteFailed()      { m.mu.Lock(); m.failed++; m.mu.Unlock() }
func (m *countingMetrics) BudgetFull(f bool) { m.mu.Lock(); m.full = f; m.mu.Unlock() }
func (m *countingMetrics) get(f func(*countingMetrics) int) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return f(m)
}

// addSamples stores n one-region frames directly (no keeper), each with
// its own content, t0 + i seconds.
func addSamples(t testing.TB, st *Store, camera string, n int, t0 time.Time, pred string) []string {
	t.Helper()
	var ids []string
	for i := 0; i < n; i++ {
		m := frame(t, 64, 48, uint64(i+1))
		jpeg, err := encodeJPEG(m, 90)
		m.Close()
		if err != nil {
			t.Fatal(err)
		}
		at := t0.Add(time.Duration(i) * time.Second)
		fid := fmt.Sprintf("%s-%s", camera, at.UTC().Format("20060102T150405.000Z"))
		rec := fieldset.Record{ID: fid + "-0", Camera: camera, Time: at, FrameID: fid, FrameSize: [2]int{64, 48}, Box: [4]int{0, 0, 64, 48},
			Region: "frame", Model: fieldset.ModelRef{Version: "abc", Engine: "cpu"}, Top: scored(pred, 0.5, "Tomato___healthy", 0.3), Rules: []string{fieldset.RuleUncertain}}
		if err := st.Add(context.Background(), NewFrame{ID: fid, Camera: camera, Time: at, Width: 64, Height: 48, JPEG: jpeg},
			[]NewSample{{Record: rec, JPEG: jpeg, DHash: uint64(i), Margin: 0.2}}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rec.ID)
	}
	return ids
}

func openStore(t testing.TB) *Store {
	t.Helper()
	st, err := Open(filepath.Join(t.TempDir(), "samples"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// files lists the JPEGs under the store (relative paths).
func files(t testing.TB, st *Store) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, kind := range []string{"images", "frames"} {
		filepath.WalkDir(filepath.Join(st.dir, kind), func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				rel, _ := filepath.Rel(st.dir, p)
				out[rel] = true
			}
			return nil
		})
	}
	return out
}

// waitFor polls cond for up to 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
