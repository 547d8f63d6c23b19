package cpu

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/leafwatch/leafwatch/model"
)

func TestToBF16RoundsToNearestEven(t *testing.T) {
	for _, tc := range []struct {
		in   float32
		want uint16
	}{
		{1, 0x3f80},
		{-2, 0xc000},
		{math.Float32frombits(0x3f808000), 0x3f80}, // tie, even stays
		{math.Float32frombits(0x3f818000), 0x3f82}, // tie, odd rounds up
		{math.Float32frombits(0x3f808001), 0x3f81}, // above the tie
		{float32(math.Inf(1)), 0x7f80},
	} {
		if got := toBF16(tc.in); got != tc.want {
			t.Errorf("toBF16(%v) = %#x, want %#x", tc.in, got, tc.want)
		}
	}
	if nan := fromBF16(toBF16(float32(math.NaN()))); nan == nan {
		t.Error("NaN lost")
	}
}

// TestToFP16 checks rounding, subnormals and saturation, and that the
// kernel's decoding returns every finite half exactly.
func TestToFP16(t *testing.T) {
	for _, tc := range []struct {
		in   float32
		want uint16
	}{
		{1, 0x3c00},
		{-2, 0xc000},
		{0, 0},
		{65504, 0x7bff},
		{65520, 0x7c00},         // the tie above the largest half rounds to Inf
		{0x1p-14, 0x0400},       // smallest normal
		{0x1p-24, 0x0001},       // smallest subnormal
		{0x1p-25, 0},            // tie, even (zero) stays
		{0x1.8p-25, 0x0001},     // above the tie
		{1 + 0x1p-11, 0x3c00},   // tie, even stays
		{1 + 3*0x1p-11, 0x3c02}, // tie, odd rounds up
		{1 + 0x1p-11 + 0x1p-20, 0x3c01},
	} {
		if got := toFP16(tc.in); got != tc.want {
			t.Errorf("toFP16(%g) = %#x, want %#x", tc.in, got, tc.want)
		}
	}
	for h := 0; h < 0x10000; h++ {
		if h&0x7c00 == 0x7c00 {
			continue // Inf and NaN: never produced for scaled rows
		}
		if back := toFP16(fromFP16(uint16(h))); back != uint16(h) && h != 0x8000 {
			t.Fatalf("half %#x decodes to %g, which encodes to %#x", h, fromFP16(uint16(h)), back)
		}
	}
}

// TestQuantizedFCMatchesReference: the C kernels (or, without cgo, the Go
// fallback) against the scalar reference, for batch sizes around the
// kernel's 8/4/2/1-image groups, an input length that leaves a tail and
// row ranges spanning several of the kernel's row blocks (each serving
// every image group); and each within its precision's error of the fp32
// layer.
func TestQuantizedFCMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const out, in = 130, 1000 + 7
	w := make([]float32, out*in)
	for i := range w {
		w[i] = float32(rng.NormFloat64()) * 0.05
	}
	bias := make([]float32, out)
	for i := range bias {
		bias[i] = float32(rng.NormFloat64())
	}
	for _, p := range []model.Precision{model.FP32, model.FP16, model.BF16, model.INT8} {
		q := quantizeFC(p, w, out, in)
		for _, n := range []int{1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17} {
			x := make([]float32, n*in)
			for i := range x {
				x[i] = max(0, float32(rng.NormFloat64())) // post-ReLU activations
			}
			ref, got, exact := make([]float32, n*out), make([]float32, n*out), make([]float32, n*out)
			fcForwardQRef(q, n, x, bias, ref, 0, out)
			fcForward(n, in, out, x, w, bias, exact)
			// The family this CPU picks, then each vector width it can run
			// (AVX-512, AVX2, SSE2/NEON), all against the reference.
			for _, lanes := range []int{0, 16, 8, 4} {
				clear(got)
				if !fcLanes(lanes, q, n, x, bias, got, 0, 37) { // two row ranges, as split over cores
					continue
				}
				fcLanes(lanes, q, n, x, bias, got, 37, out)
				var kernelErr float64
				for i := range ref {
					kernelErr = math.Max(kernelErr, math.Abs(float64(got[i]-ref[i])))
				}
				if kernelErr > 1e-4 {
					t.Errorf("%s batch %d, %d lanes: kernel differs from the reference by %g", p, n, lanes, kernelErr)
				}
			}
			fcQuantized(q, n, x, bias, got, 0, out)
			var precErr float64
			for i := range ref {
				precErr = math.Max(precErr, math.Abs(float64(got[i]-exact[i])))
			}
			// |y| is about 1: fp16 keeps 11 bits, bf16 8, int8 7 per row;
			// fp32 differs only in summation order.
			if limit := map[model.Precision]float64{model.FP32: 1e-4, model.FP16: 0.003, model.BF16: 0.02, model.INT8: 0.05}[p]; precErr > limit || (precErr == 0 && p != model.FP32) {
				t.Errorf("%s batch %d: %g from fp32 (limit %g)", p, n, precErr, limit)
			}
		}
	}
}

// TestFCWidensEveryHalf: every vector family this CPU runs converts every
// finite fp16 and bf16 weight exactly as the Go decoders do, subnormals
// and signs included. Each row holds 16 consecutive bit patterns (one
// magnitude), so one mis-widened value stands out against its row's sum.
func TestFCWidensEveryHalf(t *testing.T) {
	for _, tc := range []struct {
		p          model.Precision
		inf        uint16 // the first pattern of +Inf/NaN, excluded with its negative twin
		x          float32
		decodeName string
	}{
		// bf16 rows of the largest values stay finite with x = 1/16.
		{model.FP16, 0x7c00, 1, "fromFP16"},
		{model.BF16, 0x7f80, 1.0 / 16, "fromBF16"},
	} {
		const in = 16
		var h []uint16
		for _, sign := range []uint16{0, 0x8000} {
			for v := uint16(0); v < tc.inf; v++ {
				h = append(h, sign|v)
			}
		}
		out := len(h) / in
		q := &qfc{prec: tc.p, out: out, in: in, h: h[:out*in], scale: make([]float32, out)}
		bias := make([]float32, out)
		x := make([]float32, in)
		for i := range x {
			x[i] = tc.x
		}
		for o := range q.scale {
			q.scale[o] = 1
		}
		decode := map[model.Precision]func(uint16) float32{model.FP16: fromFP16, model.BF16: fromBF16}[tc.p]
		ref, got := make([]float32, out), make([]float32, out)
		fcForwardQRef(q, 1, x, bias, ref, 0, out)
		for _, lanes := range []int{0, 16, 8, 4} {
			clear(got)
			if !fcLanes(lanes, q, 1, x, bias, got, 0, out) {
				continue
			}
			bad := 0
			for o := range got {
				var mag float64
				for _, v := range q.h[o*in : (o+1)*in] {
					mag += math.Abs(float64(decode(v) * tc.x))
				}
				if d := math.Abs(float64(got[o] - ref[o])); d > 1e-5*mag || math.IsNaN(float64(got[o])) {
					if bad++; bad <= 3 {
						t.Errorf("%s, %d lanes: patterns %#04x–%#04x sum to %g, %s gives %g", tc.p, lanes,
							q.h[o*in], q.h[o*in+in-1], got[o], tc.decodeName, ref[o])
					}
				}
			}
			if bad > 3 {
				t.Errorf("%s, %d lanes: %d rows wrong in all", tc.p, lanes, bad)
			}
		}
	}
}

// TestReducedPrecisionClassifier: a classifier in each precision runs the
// whole network, quantizes only the large FC layers, allocates nothing
// warm, and stays close to fp32.
func TestReducedPrecisionClassifier(t *testing.T) {
	m, _ := model.NewRandom(model.TorchVision, 38, 5)
	n, runs := 3, 3
	if os.Getenv("LEAFWATCH_EMULATED") != "" {
		n, runs = 1, 1 // each AlexNet pass takes seconds under qemu
	}
	x := randInput(rand.New(rand.NewPCG(7, 7)), n*m.InputLen())
	ref := make([]float32, n*38)
	NewClassifier(m, model.Options{}).Probabilities(context.Background(), x, n, ref)
	for _, p := range []model.Precision{model.FP32, model.FP16, model.BF16, model.INT8} {
		c := NewClassifier(m, model.Options{Precision: p})
		if p == model.FP32 {
			for i, q := range c.q {
				if q != nil && (q.prec != model.FP32 || &q.f32[0] != &m.Params[m.Spec.Layers[i].Name+".weight"].Data[0]) {
					t.Fatal("fp32 copied or quantized weights")
				}
			}
			got := make([]float32, n*38)
			c.Probabilities(context.Background(), x, n, got)
			if a := testing.AllocsPerRun(runs, func() { c.Probabilities(context.Background(), x, n, got) }); a != 0 {
				t.Errorf("fp32: %v allocations per inference", a)
			}
			continue
		}
		if n := len(c.q); n != len(m.Spec.Layers) || c.q[len(c.q)-1] != nil {
			t.Fatalf("%s: the last layer is quantized", p)
		}
		got := make([]float32, n*38)
		if err := c.Probabilities(context.Background(), x, n, got); err != nil {
			t.Fatal(err)
		}
		d := 0.0
		for i := range got {
			d = math.Max(d, math.Abs(float64(got[i]-ref[i])))
		}
		t.Logf("%s: largest probability difference from fp32 %.3g (%s)", p, d, c.Engine())
		if limit := map[model.Precision]float64{model.FP16: 0.002, model.BF16: 0.01, model.INT8: 0.1}[p]; d > limit || d == 0 {
			t.Errorf("%s: probabilities differ by %g", p, d)
		}
		if a := testing.AllocsPerRun(runs, func() { c.Probabilities(context.Background(), x, n, got) }); a != 0 {
			t.Errorf("%s: %v allocations per inference", p, a)
		}
	}
	for _, name := range []string{"fp32", "fp16", "bf16", "int8"} {
		if p, err := model.ParsePrecision(name); err != nil || string(p) != name {
			t.Errorf("ParsePrecision(%q) = %q, %v", name, p, err)
		}
	}
	if _, err := model.ParsePrecision("fp8"); err == nil {
		t.Error("fp8 accepted")
	}
}

// TestConvBatchMatchesReference: the batched, parallel convolution against
// the one-image reference, for every conv layer of both variants and batch
// sizes below, at and above the images that share one GEMM.
func TestConvBatchMatchesReference(t *testing.T) {
	for _, v := range model.Variants() {
		m, _ := model.NewRandom(v, 38, 2)
		rng := rand.New(rand.NewPCG(5, 6))
		for i, l := range m.Spec.Layers {
			if l.Kind != model.Conv {
				continue
			}
			in, out := m.Shapes()[i], m.Shapes()[i+1]
			w, b := m.Params[l.Name+".weight"].Data, m.Params[l.Name+".bias"].Data
			sizes := []int{1, 3, 8, 11}
			if os.Getenv("LEAFWATCH_EMULATED") != "" {
				sizes = []int{3} // several passes in conv1/2, one in conv3–5
			}
			for _, n := range sizes {
				x := make([]float32, n*in.Len())
				for k := range x {
					x[k] = max(0, float32(rng.NormFloat64()))
				}
				col, tmp := convBuffers(&l, in, out, n)
				got := make([]float32, n*out.Len())
				relu := n%2 == 1 // the fused ReLU on odd batches
				convForwardBatch(&l, in, out, n, x, w, b, got, make([]float32, col), make([]float32, tmp), relu)
				ref := make([]float32, out.Len())
				refCol := make([]float32, in.C/l.Groups*l.Kernel*l.Kernel*out.H*out.W)
				for j := 0; j < n; j++ {
					convForward(&l, in, out, x[j*in.Len():], w, b, ref, refCol)
					if relu {
						reluForward(ref)
					}
					for k, r := range ref {
						g := got[j*out.Len()+k]
						if d := math.Abs(float64(g - r)); d > 1e-4*(1+math.Abs(float64(r))) {
							t.Fatalf("%s %s batch %d image %d [%d]: %g, reference %g (per pass %d)", v, l.Name, n, j, k, g, r, convImagesPerPass(&l, in, out, n))
						}
					}
				}
			}
		}
	}
}

// TestSgemmParMatchesSgemm: the split GEMM equals the whole one for every
// transpose combination and for splits by rows and by columns.
func TestSgemmParMatchesSgemm(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	for _, shape := range [][3]int{{300, 40, 200}, {40, 300, 200}, {2304, 169, 256}} {
		m, n, k := shape[0], shape[1], shape[2]
		for _, ta := range []bool{false, true} {
			for _, tb := range []bool{false, true} {
				a, b := make([]float32, m*k), make([]float32, k*n)
				for i := range a {
					a[i] = float32(rng.NormFloat64())
				}
				for i := range b {
					b[i] = float32(rng.NormFloat64())
				}
				lda, ldb := k, n
				if ta {
					lda = m
				}
				if tb {
					ldb = k
				}
				want, got := make([]float32, m*n), make([]float32, m*n)
				for i := range want {
					want[i] = float32(i % 7)
					got[i] = want[i]
				}
				sgemm(ta, tb, m, n, k, 1, a, lda, b, ldb, 0.5, want, n)
				sgemmPar(ta, tb, m, n, k, 1, a, lda, b, ldb, 0.5, got, n)
				for i := range want {
					if math.Abs(float64(want[i]-got[i])) > 1e-3 {
						t.Fatalf("%dx%dx%d transA=%v transB=%v: [%d] %g, whole %g", m, n, k, ta, tb, i, got[i], want[i])
					}
				}
			}
		}
	}
}
