package cpu

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/leafwatch/leafwatch/model"
)

// heapInUse is the live Go heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestReleaseWeights: a classifier built with ReleaseWeights gives the same
// probabilities, bit for bit, as one that keeps the weights; drops exactly
// the fp32 weights it holds in another form (and the memory with them);
// and the model then refuses every use that needs them, naming why.
func TestReleaseWeights(t *testing.T) {
	convs := []string{"features.0.weight", "features.10.weight", "features.3.weight", "features.6.weight", "features.8.weight"}
	fcs := []string{"classifier.1.weight", "classifier.4.weight"}
	cases := []struct {
		p    model.Precision
		want []string
	}{
		{model.FP32, convs},
		{model.FP16, append(slices.Clone(fcs), convs...)},
		{model.INT8, append(slices.Clone(fcs), convs...)},
	}
	x := randInput(rand.New(rand.NewPCG(3, 3)), 2*3*224*224)
	for _, tc := range cases {
		t.Run(string(tc.p), func(t *testing.T) {
			if tc.p != model.DefaultPrecision {
				skipEmulated(t, "the release is the host's logic; the default precision is checked")
			}
			keep, _ := model.NewRandom(model.TorchVision, 38, 9)
			want := make([]float32, 2*38)
			if err := NewClassifier(keep, model.Options{Precision: tc.p}).Probabilities(context.Background(), x, 2, want); err != nil {
				t.Fatal(err)
			}
			keep = nil

			m, _ := model.NewRandom(model.TorchVision, 38, 9)
			before := heapInUse()
			c := NewClassifier(m, model.Options{Precision: tc.p, ReleaseWeights: true})
			after := heapInUse()
			got := make([]float32, 2*38)
			if err := c.Probabilities(context.Background(), x, 2, got); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Errorf("probabilities differ from a classifier that kept the weights:\n got %v\nwant %v", got[:5], want[:5])
			}
			wantReleased := slices.Sorted(slices.Values(tc.want))
			if r := m.Released(); !slices.Equal(r, wantReleased) {
				t.Errorf("released %v, want %v", r, wantReleased)
			}
			for name, p := range m.Params {
				if !slices.Contains(wantReleased, name) && len(p.Data) != model.Numel(p.Shape) {
					t.Errorf("%s lost its data", name)
				}
			}
			// fp16 FC copies are half the fp32 ones they replace (−109 MB);
			// Winograd's filters stay whatever the precision.
			mb := func(b uint64) float64 { return float64(b) / (1 << 20) }
			t.Logf("Go heap: model %.1f MB, model + classifier %.1f MB", mb(before), mb(after))
			if tc.p != model.FP32 && after+50<<20 > before {
				t.Errorf("the classifier did not hand back the fp32 FC weights: heap %.1f → %.1f MB", mb(before), mb(after))
			}

			wantErr := func(op string, err error) {
				t.Helper()
				if err == nil || !strings.Contains(err.Error(), "released") || !strings.Contains(err.Error(), "features.3.weight") {
					t.Errorf("%s on a released model: %v, want an error naming the released weights", op, err)
				}
			}
			wantErr("Whole (what ONNX export checks first)", m.Whole("export ONNX"))
			wantErr("Save", m.Save(filepath.Join(t.TempDir(), "m.safetensors")))
			for op, f := range map[string]func(){
				"NewClassifier":   func() { NewClassifier(m, model.Options{Precision: tc.p}) },
				"NewTrainSession": func() { NewTrainSession(m, 1, nil) },
			} {
				func() {
					defer func() {
						r := recover()
						err, _ := r.(error)
						wantErr(op, err)
					}()
					f()
				}()
			}
			runtime.KeepAlive(c)
		})
	}
	whole, _ := model.NewRandom(model.BVLC, 38, 1)
	if r, err := whole.Released(), whole.Whole("export"); len(r) != 0 || err != nil {
		t.Errorf("a whole model: released %v, %v", r, err)
	}
}
