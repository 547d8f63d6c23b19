package cpu

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/leafwatch/leafwatch/model"
)

// TestLayerKernelsMatchReferences: the C bias+ReLU, max-pool and LRN
// passes (layers.c) against the Go references, on AlexNet's shapes.
func TestLayerKernelsMatchReferences(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	t.Run("bias-act", func(t *testing.T) {
		for _, tc := range []struct{ rows, p, ldx, ldy int }{{64, 3025, 3025, 3025}, {384, 169, 169 * 8, 169}, {3, 17, 40, 20}} {
			for _, relu := range []bool{false, true} {
				x := randActs(rng, tc.rows*tc.ldx, true)
				bias := randActs(rng, tc.rows, false)
				got, want := make([]float32, tc.rows*tc.ldy), make([]float32, tc.rows*tc.ldy)
				biasAct(x, tc.ldx, got, tc.ldy, bias, tc.rows, tc.p, relu)
				biasActRef(x, tc.ldx, want, tc.ldy, bias, tc.rows, tc.p, relu)
				for i := range want {
					if !sameBits(got[i], want[i]) {
						t.Fatalf("%+v relu=%v [%d]: %g, reference %g", tc, relu, i, got[i], want[i])
					}
				}
			}
		}
	})
	t.Run("maxpool", func(t *testing.T) {
		for _, tc := range []struct {
			l       model.Layer
			in, out model.Shape3
		}{
			{model.Layer{Kind: model.MaxPool, Kernel: 3, Stride: 2}, model.Shape3{C: 64, H: 55, W: 55}, model.Shape3{C: 64, H: 27, W: 27}},
			{model.Layer{Kind: model.MaxPool, Kernel: 3, Stride: 2}, model.Shape3{C: 256, H: 13, W: 13}, model.Shape3{C: 256, H: 6, W: 6}},
			{model.Layer{Kind: model.MaxPool, Kernel: 2, Stride: 2, Pad: 1}, model.Shape3{C: 5, H: 7, W: 7}, model.Shape3{C: 5, H: 4, W: 4}},
			{model.Layer{Kind: model.MaxPool, Kernel: 3, Stride: 2}, model.Shape3{C: 3, H: 9, W: 10}, model.Shape3{C: 3, H: 4, W: 4}},
			{model.Layer{Kind: model.MaxPool, Kernel: 3, Stride: 2, Pad: 1}, model.Shape3{C: 3, H: 9, W: 9}, model.Shape3{C: 3, H: 5, W: 5}},
		} {
			x := randActs(rng, tc.in.Len(), true)
			if tc.in.H < 20 {
				// Ties decide which bits win (−0 or +0), and NaN is kept
				// only where it comes first: values from a small set.
				for i := range x {
					x[i] = []float32{0, float32(math.Copysign(0, -1)), 0.5, -1, float32(math.NaN())}[rng.IntN(5)]
				}
			}
			got, want := make([]float32, tc.out.Len()), make([]float32, tc.out.Len())
			maxPoolInfer(&tc.l, tc.in, tc.out, x, got, 1, tc.in.C) // channel 0 left out, as a split does
			maxPoolChannels(&tc.l, tc.in, tc.out, x, want, nil, 1, tc.in.C)
			for i := range want {
				if !sameBits(got[i], want[i]) {
					t.Fatalf("%v→%v [%d]: %g, reference %g", tc.in, tc.out, i, got[i], want[i])
				}
			}
		}
	})
	t.Run("lrn", func(t *testing.T) {
		for _, tc := range []struct {
			l  model.Layer
			in model.Shape3
		}{
			{model.Layer{Kind: model.LRN, Size: 5, Alpha: 1e-4, Beta: 0.75, Bias: 1}, model.Shape3{C: 96, H: 55, W: 55}},
			{model.Layer{Kind: model.LRN, Size: 5, Alpha: 1e-4, Beta: 0.75, Bias: 1}, model.Shape3{C: 256, H: 27, W: 27}},
			{model.Layer{Kind: model.LRN, Size: 4, Alpha: 0.01, Beta: 0.6, Bias: 2}, model.Shape3{C: 7, H: 3, W: 3}},
		} {
			x := randActs(rng, tc.in.Len(), false)
			for i := range x {
				x[i] *= 20 // far enough from 1 that the normalisation matters
			}
			hw := tc.in.H * tc.in.W
			want := make([]float32, tc.in.Len())
			lrnForward(&tc.l, tc.in, x, want, nil)
			// Whole, in two uneven pixel ranges (as a split cuts them),
			// and through lrnPar for two images (the second a copy).
			whole, halves := make([]float32, tc.in.Len()), make([]float32, tc.in.Len())
			lrnInfer(&tc.l, tc.in, x, whole, 0, hw)
			cut := hw/2 + 1
			lrnInfer(&tc.l, tc.in, x, halves, 0, cut)
			lrnInfer(&tc.l, tc.in, x, halves, cut, hw)
			two, twoOut := append(append([]float32(nil), x...), x...), make([]float32, 2*tc.in.Len())
			lrnPar(&tc.l, tc.in, 2, two, twoOut)
			for name, got := range map[string][]float32{"whole": whole, "halves": halves, "lrnPar 1st": twoOut[:len(x)], "lrnPar 2nd": twoOut[len(x):]} {
				worst := 0.0
				for i := range want {
					worst = math.Max(worst, math.Abs(float64(got[i]-want[i]))/(1e-6+math.Abs(float64(want[i]))))
				}
				// Same sums in the same order; the C compiler may fuse a
				// multiply-add (one rounding less) and powf differs from Pow.
				if worst > 1e-5 {
					t.Fatalf("%v size %d, %s: relative difference %g", tc.in, tc.l.Size, name, worst)
				}
				if x[0] != 0 && got[0] == x[0] || x[len(x)-1] != 0 && got[len(x)-1] == x[len(x)-1] {
					t.Fatalf("%v %s: LRN did nothing", tc.in, name)
				}
			}
		}
	})
}

// TestIm2colFastMatchesRows: the C unrolling against im2colRows for
// AlexNet's shapes and odd ones (padding wider than a stride, a kernel
// wider than the input), over row ranges as the parallel split cuts them.
func TestIm2colFastMatchesRows(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for _, tc := range []struct{ c, h, w, k, stride, pad int }{
		{3, 224, 224, 11, 4, 2}, {3, 227, 227, 11, 4, 0}, {64, 27, 27, 5, 1, 2}, {192, 13, 13, 3, 1, 1},
		{2, 9, 7, 3, 2, 3}, {1, 4, 4, 7, 1, 3}, {2, 10, 11, 4, 3, 1}, {1, 3, 4099, 3, 2, 1}, {1, 70, 70, 65, 1, 0}, // wider than the phase split takes; a kernel the C leaves to Go
	} {
		oh, ow := (tc.h+2*tc.pad-tc.k)/tc.stride+1, (tc.w+2*tc.pad-tc.k)/tc.stride+1
		x := randActs(rng, tc.c*tc.h*tc.w, false)
		ld := oh*ow + 5 // images side by side leave a stride wider than one image
		rows := tc.c * tc.k
		got, want := make([]float32, rows*tc.k*ld), make([]float32, rows*tc.k*ld)
		for i := range got {
			got[i], want[i] = -7, -7 // what neither writes must stay
		}
		for g := 0; g < rows; g += 3 {
			im2colFast(x, tc.h, tc.w, 0, tc.k, tc.stride, tc.pad, oh, ow, got, ld, g, min(rows, g+3))
		}
		im2colRows(x, tc.h, tc.w, 0, tc.k, tc.stride, tc.pad, oh, ow, want, ld, 0, rows)
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%+v [%d] (row %d col %d): %g, reference %g", tc, i, i/ld, i%ld, got[i], want[i])
			}
		}
	}
}
