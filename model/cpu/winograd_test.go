package cpu

import (
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/leafwatch/leafwatch/model"
)

// TestGemmRowStep: products over the small-matrix limit split into the
// fewest even blocks of a multiple of 8 rows, each within the limit; none
// split without the kernels, under the limit, or into slivers.
func TestGemmRowStep(t *testing.T) {
	const small = 100 * 100 * 100
	for _, c := range []struct{ m, n, k, small, want int }{
		{128, 49, 192, 0, 128},          // no small kernels
		{128, 81, 64, small, 128},       // conv2 batch 1: already within
		{128, 49, 192, small, 64},       // conv3 batch 1: two blocks
		{128, 49, 384, small, 48},       // conv4: 48 + 48 + 32
		{128, 245, 384, small, 8},       // batch 8: blocks of 8
		{128, 245 * 2, 384, small, 128}, // would be slivers of 5 rows
		{20, 49, 2000, small, 8},        // 8 + 8 + 4
	} {
		got := gemmRowStep(c.m, c.n, c.k, c.small)
		if got != c.want {
			t.Errorf("gemmRowStep(%d, %d, %d, %d) = %d, want %d", c.m, c.n, c.k, c.small, got, c.want)
		}
		if got != c.m && (got%8 != 0 || got*c.n*c.k > c.small) {
			t.Errorf("gemmRowStep(%d, %d, %d): blocks of %d rows are not multiples of 8 within %d", c.m, c.n, c.k, got, c.small)
		}
	}
}

// TestWinogradMatchesDirect: every convolution of both variants (bvlc's
// grouped ones included) through Winograd — F(2×2, 3×3), F(3×3, 5×5), and
// conv1's 11×11 after its space-to-depth rearrangement — against the
// direct reference, for batch sizes across the images that share a pass,
// with and without the fused ReLU; and the C transforms against their Go
// references bit for bit.
//
// The products run both whole and split into row blocks for the BLAS's
// small-matrix kernels (gemmRowStep), whichever this BLAS picks by itself.
func TestWinogradMatchesDirect(t *testing.T) {
	defer func(orig func() int) { blasSmallGEMM = orig }(blasSmallGEMM)
	for _, small := range []int{0, 100 * 100 * 100} {
		blasSmallGEMM = func() int { return small }
		winogradMatchesDirect(t, small)
	}
	winogradTransformsMatchReferences(t)
}

func winogradMatchesDirect(t *testing.T, small int) {
	for _, v := range model.Variants() {
		m, _ := model.NewRandom(v, 38, 3)
		rng := rand.New(rand.NewPCG(15, 16))
		found := 0
		for i, l := range m.Spec.Layers {
			if !winogradFits(&l) {
				continue
			}
			found++
			in, out := m.Shapes()[i], m.Shapes()[i+1]
			w, b := m.Params[l.Name+".weight"].Data, m.Params[l.Name+".bias"].Data
			ww := newWinoWeights(&l, in, out, w)
			sizes := []int{1, 3, 8, 14}
			if os.Getenv("LEAFWATCH_EMULATED") != "" {
				sizes = []int{3}
			}
			for _, n := range sizes {
				x := randActs(rng, n*in.Len(), false)
				for k := range x {
					if i > 0 {
						x[k] = max(0, x[k]) // post-ReLU activations; conv1 sees signed pixels
					}
				}
				vl, ml := winoBuffers(&l, in, out, n)
				got := make([]float32, n*out.Len())
				relu := n%2 == 0
				convForwardWinograd(&l, in, out, n, x, ww, b, got, make([]float32, vl), make([]float32, ml), relu)
				ref := make([]float32, out.Len())
				col := make([]float32, in.C/l.Groups*l.Kernel*l.Kernel*out.H*out.W)
				worst := 0.0
				for j := 0; j < n; j++ {
					convForward(&l, in, out, x[j*in.Len():], w, b, ref, col)
					if relu {
						reluForward(ref)
					}
					for k, r := range ref {
						d := math.Abs(float64(got[j*out.Len()+k]-r)) / (1 + math.Abs(float64(r)))
						worst = math.Max(worst, d)
					}
				}
				if limit := map[int]float64{3: 2e-5, 5: 6e-5, 11: 2e-5}[l.Kernel]; worst > limit {
					t.Errorf("%s %s batch %d (GEMMs split under %d): Winograd differs from the direct convolution by %.3g (relative)", v, l.Name, n, small, worst)
				}
				if n == 8 {
					t.Logf("%s %s batch 8 (GEMMs split under %d): largest difference %.3g", v, l.Name, small, worst)
				}
			}
		}
		if found != 5 {
			t.Errorf("%s: %d layers run as Winograd, want conv1–5", v, found)
		}
	}
}

func winogradTransformsMatchReferences(t *testing.T) {
	type inFn func(x []float32, xs, nb, h, w, pad, c0, c1 int, v []float32, step, T int)
	type outFn func(m []float32, step, T, nb, oh, ow int, bias []float32, relu bool, y []float32, ys, co0, co1 int)
	kernels := []struct {
		name        string
		transforms  int
		kernel      int
		tile        int // output tile side
		pad         int
		in, inRef   inFn
		out, outRef outFn
	}{
		{"F(2×2, 3×3)", 16, 3, 2, 1, winogradIn, winogradInRef, winogradOut, winogradOutRef},
		{"F(2×2, 3×3) valid", 16, 3, 2, 0, winogradIn, winogradInRef, winogradOut, winogradOutRef},
		{"F(3×3, 5×5)", 49, 5, 3, 2, pad2(winograd5In), pad2(winograd5InRef), winograd5Out, winograd5OutRef},
	}
	rng := rand.New(rand.NewPCG(17, 18))
	for _, k := range kernels {
		for _, s := range []model.Shape3{{C: 5, H: 13, W: 13}, {C: 3, H: 6, W: 7}, {C: 2, H: 1, W: 1}, {C: 2, H: 16, W: 15}, {C: 2, H: 19, W: 17}, {C: 3, H: 27, W: 27}, {C: 4, H: 9, W: 8}} {
			const nb = 2
			o := model.Shape3{C: s.C, H: s.H + 2*k.pad - k.kernel + 1, W: s.W + 2*k.pad - k.kernel + 1}
			if o.H < 1 || o.W < 1 {
				continue
			}
			x := randActs(rng, nb*s.Len(), true)
			T := nb * winoTilesM(o.H, o.W, k.tile)
			st := winoStride(s.C, T)
			got, want := make([]float32, k.transforms*st), make([]float32, k.transforms*st)
			k.in(x, s.Len(), nb, s.H, s.W, k.pad, 1, s.C, got, st, T)
			k.inRef(x, s.Len(), nb, s.H, s.W, k.pad, 1, s.C, want, st, T)
			for i := range want {
				if !sameBits(got[i], want[i]) {
					t.Fatalf("%s input transform %v [%d]: %g, reference %g", k.name, s, i, got[i], want[i])
				}
			}
			bias := randActs(rng, s.C, false)
			for _, relu := range []bool{false, true} {
				y, yr := make([]float32, nb*o.Len()), make([]float32, nb*o.Len())
				k.out(got, st, T, nb, o.H, o.W, bias, relu, y, o.Len(), 1, s.C)
				k.outRef(got, st, T, nb, o.H, o.W, bias, relu, yr, o.Len(), 1, s.C)
				for i := range yr {
					if !sameBits(y[i], yr[i]) {
						t.Fatalf("%s output transform %v relu=%v [%d]: %g, reference %g", k.name, o, relu, i, y[i], yr[i])
					}
				}
			}
		}
	}
}

// pad2 adapts the 5×5 input transforms, whose padding is always 2.
func pad2(f func(x []float32, xs, nb, h, w, c0, c1 int, v []float32, step, T int)) func(x []float32, xs, nb, h, w, pad, c0, c1 int, v []float32, step, T int) {
	return func(x []float32, xs, nb, h, w, pad, c0, c1 int, v []float32, step, T int) {
		if pad != 2 {
			panic("F(3×3, 5×5) pads by 2")
		}
		f(x, xs, nb, h, w, c0, c1, v, step, T)
	}
}

// TestSpaceToDepthMatchesDirect: strided convolutions of other shapes than
// conv1's (strides 2 and 3, kernels from one stride to three, odd padding,
// non-square inputs whose last blocks are partly outside the image)
// through the space-to-depth form against the direct reference.
func TestSpaceToDepthMatchesDirect(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 20))
	for _, tc := range []struct {
		k, s, p int
		in      model.Shape3
	}{
		{5, 2, 1, model.Shape3{C: 2, H: 11, W: 9}},
		{3, 3, 0, model.Shape3{C: 3, H: 10, W: 14}},
		{9, 3, 4, model.Shape3{C: 1, H: 8, W: 8}},
		{4, 2, 0, model.Shape3{C: 2, H: 7, W: 12}},
		{11, 4, 2, model.Shape3{C: 3, H: 35, W: 30}},
	} {
		l := model.Layer{Kind: model.Conv, Out: 5, Kernel: tc.k, Stride: tc.s, Pad: tc.p, Groups: 1}
		if !s2dFits(&l) || !winogradFits(&l) {
			t.Fatalf("%+v does not take the space-to-depth form", tc)
		}
		oh, ow := (tc.in.H+2*tc.p-tc.k)/tc.s+1, (tc.in.W+2*tc.p-tc.k)/tc.s+1
		out := model.Shape3{C: l.Out, H: oh, W: ow}
		w, b := randActs(rng, l.Out*tc.in.C*tc.k*tc.k, false), randActs(rng, l.Out, false)
		ww := newWinoWeights(&l, tc.in, out, w)
		for _, n := range []int{1, 3} {
			x := randActs(rng, n*tc.in.Len(), false)
			vl, ml := winoBuffers(&l, tc.in, out, n)
			got := make([]float32, n*out.Len())
			convForwardWinograd(&l, tc.in, out, n, x, ww, b, got, make([]float32, vl), make([]float32, ml), false)
			ref := make([]float32, out.Len())
			for j := 0; j < n; j++ {
				convForward(&l, tc.in, out, x[j*tc.in.Len():], w, b, ref, make([]float32, tc.in.C*tc.k*tc.k*oh*ow))
				for i, r := range ref {
					if d := math.Abs(float64(got[j*out.Len()+i]-r)) / (1 + math.Abs(float64(r))); d > 2e-5 {
						t.Fatalf("%+v batch %d image %d [%d]: %g, direct %g", tc, n, j, i, got[j*out.Len()+i], r)
					}
				}
			}
		}
	}
}
