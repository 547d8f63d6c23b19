// Package half owns the project's one conversion between float32 and the
// 16-bit floats it meets: IEEE half precision (fp16: the CPU engine's FC
// weights, F16 tensors of imported state dicts) and bfloat16 (bf16 weights,
// BF16 tensors).
package half

import (
	"math"
	"runtime"
	"sync"
)

// ToFloat32 widens an IEEE half exactly: zeros, subnormals, normals, ±Inf
// and NaN (payload kept). For finite halves it is the CPU engine's C
// kernel conversion (the bits moved into a float's place and the exponent
// rebased by one multiply), so the Go reference and the kernels agree bit
// for bit.
func ToFloat32(h uint16) float32 {
	if h&0x7c00 == 0x7c00 { // Inf or NaN
		return math.Float32frombits(uint32(h&0x8000)<<16 | 0x7f800000 | uint32(h&0x3ff)<<13)
	}
	return math.Float32frombits(uint32(h&0x8000)<<16|uint32(h&0x7fff)<<13) * 0x1p112
}

// FromFloat32 rounds v to the nearest IEEE half (ties to even),
// subnormals included; values past 65504 saturate to ±Inf and NaN stays
// NaN.
func FromFloat32(v float32) uint16 {
	b := math.Float32bits(v)
	sign := uint16(b>>16) & 0x8000
	a := b & 0x7fffffff
	switch {
	case a > 0x7f800000: // NaN
		return sign | 0x7e00
	case a >= 0x477ff000: // rounds past 65504
		return sign | 0x7c00
	case a < 0x38800000: // below 2⁻¹⁴: a subnormal half, in units of 2⁻²⁴
		return sign | uint16(math.RoundToEven(float64(math.Float32frombits(a))*(1<<24)))
	}
	a += 0xfff + (a>>13)&1
	return sign | uint16((a-0x38000000)>>13)
}

// BF16ToFloat32 widens a bfloat16 (exact: its bits are a float32's top
// half).
func BF16ToFloat32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// BF16FromFloat32 rounds to the nearest bfloat16 (ties to even); NaN stays
// NaN.
func BF16FromFloat32(v float32) uint16 {
	b := math.Float32bits(v)
	if v != v {
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// FromFloat32Rows converts a rows×cols row-major matrix to fp16 with one
// scale per row: h[r][c] = fp16(w[r][c] / scale[r]) with scale[r] the
// row's largest magnitude (0 for a row of zeros, whose halves are 0), so
// w ≈ scale[r]·h[r][c]. Scaling each row to [−1, 1] keeps small weights
// (fully connected layers' are mostly below 0.01) clear of fp16's
// subnormals, where they would lose significant bits. It is the one
// definition of the engines' fp16 weights: the CPU's FC kernel and the
// CUDA engine's half-precision GEMMs read the same halves.
func FromFloat32Rows(w []float32, rows, cols int) (h []uint16, scale []float32) {
	h, scale = make([]uint16, rows*cols), make([]float32, rows)
	// Rows are independent: split them over the cores (fc6 is 38 M weights,
	// converted at every model load: a device's start waits for it).
	workers := min(runtime.GOMAXPROCS(0), max(1, rows*cols/(1<<18)))
	var wg sync.WaitGroup
	for k := 0; k < workers; k++ {
		r0, r1 := rows*k/workers, rows*(k+1)/workers
		wg.Add(1)
		go func() {
			defer wg.Done()
			fromFloat32Rows(w, cols, h, scale, r0, r1)
		}()
	}
	wg.Wait()
	return h, scale
}

func fromFloat32Rows(w []float32, cols int, h []uint16, scale []float32, r0, r1 int) {
	for r := r0; r < r1; r++ {
		row := w[r*cols : (r+1)*cols]
		var m float32
		for _, v := range row {
			m = max(m, float32(math.Abs(float64(v))))
		}
		if m == 0 {
			continue
		}
		scale[r] = m
		out := h[r*cols : (r+1)*cols]
		for i, v := range row {
			out[i] = FromFloat32(v / m)
		}
	}
}
