package half

import (
	"math"
	"testing"
)

// widen is the textbook decoder (normalising subnormals by shifting), the
// reference the multiply form is checked against.
func widen(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch exp {
	case 0:
		if frac == 0 {
			return math.Float32frombits(sign)
		}
		e := uint32(127 - 15 + 1)
		for frac&0x400 == 0 {
			frac <<= 1
			e--
		}
		return math.Float32frombits(sign | e<<23 | (frac&0x3ff)<<13)
	case 0x1f:
		return math.Float32frombits(sign | 0xff<<23 | frac<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | frac<<13)
}

// TestEveryHalf: all 65,536 patterns widen to the reference's bits and
// narrow back to themselves (NaNs to a NaN).
func TestEveryHalf(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		got, want := ToFloat32(h), widen(h)
		if math.Float32bits(got) != math.Float32bits(want) {
			t.Fatalf("half %#04x: %g (%#08x), want %g (%#08x)", h, got, math.Float32bits(got), want, math.Float32bits(want))
		}
		back := FromFloat32(got)
		if got != got {
			if back&0x7c00 != 0x7c00 || back&0x3ff == 0 {
				t.Fatalf("NaN %#04x narrows to %#04x", h, back)
			}
			continue
		}
		if back != h {
			t.Fatalf("half %#04x widens to %g, which narrows to %#04x", h, got, back)
		}
	}
}

func TestRounding(t *testing.T) {
	for _, tc := range []struct {
		in   float32
		want uint16
	}{
		{1, 0x3c00}, {-2, 0xc000}, {65504, 0x7bff}, {65520, 0x7c00}, {1e-8, 0}, {5.960464e-8, 1},
		{float32(math.Inf(-1)), 0xfc00}, {1 + 1.0/2048, 0x3c00}, // a tie rounds to even
	} {
		if got := FromFloat32(tc.in); got != tc.want {
			t.Errorf("FromFloat32(%g) = %#04x, want %#04x", tc.in, got, tc.want)
		}
	}
	for _, v := range []float32{1, -3.5, 1e-20, 65504, 3.0e38} {
		if got := BF16ToFloat32(BF16FromFloat32(v)); math.Abs(float64(got-v)) > math.Abs(float64(v))/128 {
			t.Errorf("bf16 %g → %g", v, got)
		}
	}
}

// TestFromFloat32Rows: each row is scaled by its largest magnitude, a zero
// row stays zero with scale 0, and scale·half gives the weights back to
// fp16's relative precision — including weights far below fp16's smallest
// normal, which unscaled halves would flush towards zero.
func TestFromFloat32Rows(t *testing.T) {
	w := []float32{
		0.5, -0.25, 0.125, 1e-6, // max 0.5
		0, 0, 0, 0,
		3e-7, -1e-7, 2e-8, 1.5e-7, // tiny: below 2⁻¹⁴ ≈ 6.1e-5 throughout
	}
	h, scale := FromFloat32Rows(w, 3, 4)
	if want := []float32{0.5, 0, 3e-7}; scale[0] != want[0] || scale[1] != want[1] || scale[2] != want[2] {
		t.Fatalf("scales %v, want %v", scale, want)
	}
	if h[0] != 0x3c00 || h[1] != 0xb800 { // 1.0 and -0.5
		t.Errorf("row 0 starts %#x %#x, want 0x3c00 0xb800", h[0], h[1])
	}
	for i := 4; i < 8; i++ {
		if h[i] != 0 {
			t.Errorf("zero row: half %d is %#x", i, h[i])
		}
	}
	for i, v := range w {
		got := scale[i/4] * ToFloat32(h[i])
		if d := math.Abs(float64(got - v)); d > math.Abs(float64(scale[i/4]))*0x1p-11 {
			t.Errorf("weight %d: %g comes back as %g", i, v, got)
		}
	}
	if unscaled := ToFloat32(FromFloat32(2e-8)); unscaled != 0 {
		t.Errorf("2e-8 as a plain half is %g: the test's premise (it flushes to zero) is wrong", unscaled)
	}
}

// TestFromFloat32RowsSplit: split over the cores, the conversion gives the
// serial one's halves and scales.
func TestFromFloat32RowsSplit(t *testing.T) {
	const rows, cols = 1000, 700
	w := make([]float32, rows*cols)
	for i := range w {
		w[i] = float32(math.Sin(float64(i))) * float32(1+i%13) * 1e-3
	}
	h, scale := FromFloat32Rows(w, rows, cols)
	hs, ss := make([]uint16, rows*cols), make([]float32, rows)
	fromFloat32Rows(w, cols, hs, ss, 0, rows)
	for i := range hs {
		if h[i] != hs[i] {
			t.Fatalf("half %d: %#x split, %#x serial", i, h[i], hs[i])
		}
	}
	for r := range ss {
		if scale[r] != ss[r] {
			t.Fatalf("scale %d: %g split, %g serial", r, scale[r], ss[r])
		}
	}
}
