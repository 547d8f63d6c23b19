package dnncheck

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"gocv.io/x/gocv"

	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/model/cpu"
	"github.com/leafwatch/leafwatch/model/internal/peertest"
	"github.com/leafwatch/leafwatch/model/onnx"
)

// opencvNet loads our ONNX export into OpenCV DNN.
func opencvNet(t testing.TB, m *model.Model) gocv.Net {
	t.Helper()
	p := filepath.Join(t.TempDir(), "m.onnx")
	if err := onnx.Save(m, p); err != nil {
		t.Fatal(err)
	}
	net := gocv.ReadNetFromONNX(p)
	if net.Empty() {
		t.Fatal("OpenCV DNN could not read the exported ONNX")
	}
	return net
}

func opencvForward(t testing.TB, net gocv.Net, x []float32, n, s int) []float32 {
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&x[0])), len(x)*4)
	blob, err := gocv.NewMatWithSizesFromBytes([]int{n, 3, s, s}, gocv.MatTypeCV32F, raw)
	if err != nil {
		t.Fatal(err)
	}
	defer blob.Close()
	net.SetInput(blob, "input")
	out := net.Forward("probabilities")
	defer out.Close()
	d, err := out.DataPtrFloat32()
	if err != nil {
		t.Fatal(err)
	}
	return append([]float32(nil), d...)
}

// TestOpenCVDNNAgrees: random-weight models of both variants, exported to
// ONNX, give the same probabilities in OpenCV DNN and in our engine.
func TestOpenCVDNNAgrees(t *testing.T) {
	worst := 0.0
	for _, v := range model.Variants() {
		for _, n := range []int{1, 3} {
			t.Run(fmt.Sprintf("%s/batch%d", v, n), func(t *testing.T) {
				m := peertest.Model(t, v)
				net := opencvNet(t, m)
				defer net.Close()
				s := m.Spec.InputSize
				x := peertest.Input(n*m.InputLen(), 5)
				want := opencvForward(t, net, x, n, s)
				got := make([]float32, n*38)
				if err := cpu.NewClassifier(m, model.Options{}).Probabilities(context.Background(), x, n, got); err != nil {
					t.Fatal(err)
				}
				if len(want) != len(got) {
					t.Fatalf("OpenCV gave %d values, we %d", len(want), len(got))
				}
				d, maxP := 0.0, 0.0
				for i := range got {
					d = math.Max(d, math.Abs(float64(got[i]-want[i])))
					maxP = math.Max(maxP, float64(got[i]))
				}
				worst = math.Max(worst, d)
				t.Logf("max |ours − OpenCV| = %.3g (largest probability %.3f)", d, maxP)
				if d > 1e-4 {
					t.Errorf("probabilities differ by %g > 1e-4", d)
				}
			})
		}
	}
	t.Logf("largest difference across variants and batches: %.3g", worst)
}

// BenchmarkVsOpenCVDNN runs our engine and OpenCV DNN on the same exported
// weights and input, in one process, and reports ms/image and the ratio.
func BenchmarkVsOpenCVDNN(b *testing.B) {
	for _, v := range model.Variants() {
		for _, n := range []int{1, 8} {
			b.Run(fmt.Sprintf("%s/batch%d", v, n), func(b *testing.B) {
				peertest.FreshHeap()
				m, _ := model.NewRandom(v, 38, 3)
				net := opencvNet(b, m)
				defer net.Close()
				s := m.Spec.InputSize
				x := peertest.Input(n*m.InputLen(), 1)
				c := cpu.NewClassifier(m, model.Options{MaxBatch: n})
				probs := make([]float32, n*38)
				ctx := context.Background()
				c.Probabilities(ctx, x, n, probs)
				opencvForward(b, net, x, n, s)
				var ours, cv time.Duration
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					t0 := time.Now()
					c.Probabilities(ctx, x, n, probs)
					t1 := time.Now()
					opencvForward(b, net, x, n, s)
					ours += t1.Sub(t0)
					cv += time.Since(t1)
				}
				imgs := float64(b.N * n)
				b.ReportMetric(float64(ours.Microseconds())/1000/imgs, "ours_ms/image")
				b.ReportMetric(float64(cv.Microseconds())/1000/imgs, "opencv_ms/image")
				b.ReportMetric(float64(ours)/float64(cv), "ratio_ours/opencv")
			})
		}
	}
}
