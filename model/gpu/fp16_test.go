//go:build cuda

package gpu

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/leafwatch/leafwatch/internal/half"
	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/model/cpu"
)

// The CUDA engine's fp16 path (precision: fp16): half weights on the
// device, activations rounded to halves for cublasGemmEx, sums in fp32.

// satHalf is the kernels' f2h: internal/half's rounding, with magnitudes
// past 65504 saturated instead of becoming Inf.
func satHalf(v float32) uint16 {
	h := half.FromFloat32(v)
	if h&0x7fff == 0x7c00 {
		return h&0x8000 | 0x7bff
	}
	return h
}

// TestCUDAHalfConversion: the to_half kernel rounds exactly as
// internal/half does (ties to even, subnormals, signed zeros, NaN), and
// saturates past fp16's range — on every exponent, the values either side
// of each rounding boundary, and random bit patterns.
func TestCUDAHalfConversion(t *testing.T) {
	needGPU(t)
	m := testModel(t, model.TorchVision, 5, 11)
	ge, err := New(m, model.Options{MaxBatch: 1, Precision: model.FP16}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer ge.Close()
	e := ge.(*Engine)
	x := []float32{0, float32(math.Copysign(0, -1)), 1, -1, 65504, 65519.99, 65520, -65520, 1e9,
		float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), 0x1p-14, 0x1p-24, 0x1p-25, 0x1.8p-25, 0x1p-26, 1e-45}
	for e := uint32(90); e < 146; e++ { // every exponent near fp16's range
		for _, frac := range []uint32{0, 1, 0xfff, 0x1000, 0x1001, 0x2000, 0x3000, 0x7fffff, 0x400000} {
			x = append(x, math.Float32frombits(e<<23|frac), -math.Float32frombits(e<<23|frac))
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for len(x) < 1<<16 {
		x = append(x, math.Float32frombits(rng.Uint32()))
	}
	leave, err := e.d.enter()
	if err != nil {
		t.Fatal(err)
	}
	defer leave()
	src, err := e.d.alloc(len(x))
	if err != nil {
		t.Fatal(err)
	}
	dst, err := e.d.allocHalves(len(x))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.d.upload(src, x); err != nil {
		t.Fatal(err)
	}
	if err := e.d.launch("to_half", len(x), src, dst, len(x)); err != nil {
		t.Fatal(err)
	}
	got := make([]uint16, len(x))
	if err := e.d.downloadHalves(got, dst); err != nil {
		t.Fatal(err)
	}
	bad := 0
	for i, v := range x {
		want := satHalf(v)
		if v != v { // any NaN is a NaN
			if got[i]&0x7c00 != 0x7c00 || got[i]&0x3ff == 0 {
				t.Errorf("NaN %#x became %#x", math.Float32bits(v), got[i])
			}
			continue
		}
		if got[i] != want {
			if bad++; bad <= 10 {
				t.Errorf("%g (%#x): kernel %#x, want %#x", v, math.Float32bits(v), got[i], want)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d conversions differ", bad, len(x))
	}
}

// halfReference is m with the layers e computes in halves given the
// weights the device holds (scale·half, widened exactly), for a CPU
// reference of the fp16 path.
func halfReference(t *testing.T, e *Engine, m *model.Model) *model.Model {
	t.Helper()
	params := map[string]*model.Tensor{}
	for name, p := range m.Params {
		params[name] = &model.Tensor{Shape: slices.Clone(p.Shape), Data: slices.Clone(p.Data)}
	}
	for layer := range e.halves {
		w := params[layer+".weight"]
		rows := w.Shape[0]
		h, scale := half.FromFloat32Rows(w.Data, rows, len(w.Data)/rows)
		for i := range w.Data {
			w.Data[i] = scale[i/(len(w.Data)/rows)] * half.ToFloat32(h[i])
		}
	}
	r, err := model.New(m.Spec, params, m.Meta)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestCUDAFP16LayersExact runs every layer of the fp16 engine alone on
// the CPU's input for that layer and compares it with the CPU computing
// the same arithmetic: the half layers' inputs rounded as the kernels
// round them and their weights as the device holds them. Under emulation
// (exact products, fp32 sums) they agree to fp32 rounding, so a wrong
// index, leading dimension, scale or type shows at once; on a GPU the
// tensor cores' summation order loosens it to 1e-3. The fp16 error itself
// is measured against fp32 by TestCUDAFP16MatchesCPU.
func TestCUDAFP16LayersExact(t *testing.T) {
	needGPU(t)
	tol := 1e-5
	if !emulated {
		tol = 1e-3
	}
	for _, cc := range []int{53, 87} {
		for _, v := range model.Variants() {
			t.Run(fmt.Sprintf("sm_%d/%s", cc, v), func(t *testing.T) {
				useCC(t, cc)
				m := testModel(t, v, 5, 11)
				const n = 2
				ge, err := New(m, model.Options{MaxBatch: n, Precision: model.FP16}, quiet)
				if err != nil {
					t.Fatal(err)
				}
				defer ge.Close()
				e := ge.(*Engine)
				if e.Precision() != model.FP16 || len(e.halves) == 0 {
					t.Fatalf("precision %s with %d half layers; want fp16", e.Precision(), len(e.halves))
				}
				ref := cpu.NewTrainSession(halfReference(t, e, m), n, nil)
				plain := cpu.NewTrainSession(m, n, nil)
				in := randInput(n, m.InputLen(), 5)
				leave, err := e.d.enter()
				if err != nil {
					t.Fatal(err)
				}
				defer leave()
				for i, l := range m.Spec.Layers {
					_, isHalf := e.halves[l.Name]
					rounded := in
					if isHalf {
						rounded = make([]float32, len(in))
						for j, x := range in {
							rounded[j] = half.ToFloat32(satHalf(x))
						}
					}
					want := slices.Clone(ref.Range(rounded, n, i, i+1))
					got := runLayer(t, e, i, n, in, len(want))
					if d := relDiff(got, want); d > tol || math.IsNaN(d) {
						t.Fatalf("layer %d (%s %s, half %v) differs from the CPU's fp16 arithmetic by %.3g relative", i, l.Kind, l.Name, isHalf, d)
					}
					exact := slices.Clone(plain.Range(in, n, i, i+1))
					if isHalf {
						t.Logf("layer %d (%s %s): fp16 vs fp32 %.2g relative", i, l.Kind, l.Name, relDiff(got, exact))
					}
					in = exact
				}
			})
		}
	}
}

// TestCUDAFP16MatchesCPU: the fp16 engine's probabilities against the CPU
// engine's at fp16 (its default) and fp32, both variants, batches that
// split, within the agreement bar precision changes are held to (largest
// probability difference ≤ 0.005; the same top-1 wherever the CPU's top
// two are more than 0.01 apart).
func TestCUDAFP16MatchesCPU(t *testing.T) {
	needGPU(t)
	for _, v := range model.Variants() {
		m := testModel(t, v, 38, 4)
		ge, err := New(m, model.Options{MaxBatch: 8, Precision: model.FP16}, quiet)
		if err != nil {
			t.Fatal(err)
		}
		c16 := cpu.NewClassifier(m, model.Options{MaxBatch: 8, Precision: model.FP16})
		c32 := cpu.NewClassifier(m, model.Options{MaxBatch: 8})
		var worst16, worst32 float64
		close := 0
		for _, n := range []int{1, 3, 8, 11} {
			x := randInput(n, m.InputLen(), uint64(n)+100)
			a, b, c := make([]float32, n*38), make([]float32, n*38), make([]float32, n*38)
			ctx := context.Background()
			if err := ge.Probabilities(ctx, x, n, a); err != nil {
				t.Fatal(err)
			}
			if err := c16.Probabilities(ctx, x, n, b); err != nil {
				t.Fatal(err)
			}
			if err := c32.Probabilities(ctx, x, n, c); err != nil {
				t.Fatal(err)
			}
			d16, d32 := maxAbsDiff(a, b), maxAbsDiff(a, c)
			worst16, worst32 = math.Max(worst16, d16), math.Max(worst32, d32)
			if d16 > 0.005 || math.IsNaN(d16) || d32 > 0.005 || math.IsNaN(d32) {
				t.Errorf("%s batch %d: probabilities differ from the CPU's fp16 by %.3g, fp32 by %.3g (bar 0.005)", v, n, d16, d32)
			}
			for j := 0; j < n; j++ {
				ta, tb, margin := top2(a[j*38:(j+1)*38]), top2(b[j*38:(j+1)*38]), 0.0
				if tb[0] != ta[0] {
					if margin = float64(b[j*38+tb[0]] - b[j*38+tb[1]]); margin > 0.01 {
						t.Errorf("%s batch %d image %d: top-1 %d on CUDA fp16, %d on the CPU (margin %.3f)", v, n, j, ta[0], tb[0], margin)
					}
				}
				if float64(b[j*38+tb[0]]-b[j*38+tb[1]]) <= 0.01 {
					close++
				}
			}
		}
		t.Logf("%s: max |cuda fp16 − cpu fp16| = %.3g, |cuda fp16 − cpu fp32| = %.3g over batches 1, 3, 8, 11 (%d of 23 images with the CPU's top two within 0.01)", v, worst16, worst32, close)
		if err := ge.Close(); err != nil {
			t.Error(err)
		}
	}
}

// top2 returns the indices of the two largest values.
func top2(p []float32) [2]int {
	best := [2]int{0, 1}
	if p[1] > p[0] {
		best = [2]int{1, 0}
	}
	for i := 2; i < len(p); i++ {
		switch {
		case p[i] > p[best[0]]:
			best = [2]int{i, best[0]}
		case p[i] > p[best[1]]:
			best[1] = i
		}
	}
	return best
}

// TestCUDAFP16HalvesDeviceMemory: the fp16 engine holds the half layers'
// weights in half the bytes (plus one scale per row), so its device
// memory is the fp32 engine's less nearly half the weights'.
func TestCUDAFP16HalvesDeviceMemory(t *testing.T) {
	needGPU(t)
	m := testModel(t, model.TorchVision, 38, 4)
	bytes := map[model.Precision]int64{}
	var halfWeights int64
	for _, p := range []model.Precision{model.FP32, model.FP16} {
		ge, err := New(m, model.Options{MaxBatch: 1, Precision: p}, quiet)
		if err != nil {
			t.Fatal(err)
		}
		e := ge.(*Engine)
		bytes[p] = e.DeviceBytes()
		if p == model.FP16 {
			for layer := range e.halves {
				halfWeights += int64(len(m.Params[layer+".weight"].Data)) * 4
			}
		}
		ge.Close()
	}
	saved := bytes[model.FP32] - bytes[model.FP16]
	t.Logf("device memory: fp32 %.1f MB, fp16 %.1f MB (the half layers' fp32 weights: %.1f MB)", float64(bytes[model.FP32])/1e6, float64(bytes[model.FP16])/1e6, float64(halfWeights)/1e6)
	if saved < halfWeights*45/100 {
		t.Errorf("fp16 saves %d bytes of %d; want nearly half the half layers' %d", saved, bytes[model.FP32], halfWeights)
	}
}

// TestCUDAPrecisionChoice: fp16 where the GPU has fp16 arithmetic, fp32 on
// older GPUs and for the precisions the CUDA engine has no path for.
func TestCUDAPrecisionChoice(t *testing.T) {
	needGPU(t)
	m := testModel(t, model.TorchVision, 5, 11)
	cases := []struct {
		cc   int
		p    model.Precision
		want model.Precision
	}{{0, model.FP32, model.FP32}, {0, "", model.FP32}, {0, model.BF16, model.FP32}, {0, model.INT8, model.FP32}, {0, model.FP16, model.FP16}}
	if emulated {
		cases = append(cases, struct {
			cc   int
			p    model.Precision
			want model.Precision
		}{52, model.FP16, model.FP32}, struct {
			cc   int
			p    model.Precision
			want model.Precision
		}{53, model.FP16, model.FP16})
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("sm_%d/%s", tc.cc, tc.p), func(t *testing.T) {
			if tc.cc != 0 {
				useCC(t, tc.cc)
			}
			ge, err := New(m, model.Options{MaxBatch: 1, Precision: tc.p}, quiet)
			if err != nil {
				t.Fatal(err)
			}
			defer ge.Close()
			if got := ge.(*Engine).Precision(); got != tc.want {
				t.Errorf("precision %s, want %s", got, tc.want)
			}
		})
	}
}
