package cpu

import (
	"math"

	"github.com/leafwatch/leafwatch/internal/half"
	"github.com/leafwatch/leafwatch/model"
)

// qfc is one FC layer's weights as the streaming kernel reads them,
// out×in row-major: the model's own fp32 weights (not a copy), or a
// reduced-precision copy.
type qfc struct {
	prec    model.Precision
	out, in int
	f32     []float32 // FP32
	h       []uint16  // BF16, FP16
	i8      []int8    // INT8
	scale   []float32 // FP16, INT8: per output row
}

// quantizeFC converts w (out×in) to p; FP32 keeps w itself.
func quantizeFC(p model.Precision, w []float32, out, in int) *qfc {
	q := &qfc{prec: p, out: out, in: in}
	switch p {
	case model.FP32:
		q.f32 = w
	case model.BF16:
		q.h = make([]uint16, len(w))
		for i, v := range w {
			q.h[i] = toBF16(v)
		}
	case model.FP16:
		q.h, q.scale = half.FromFloat32Rows(w, out, in)
	case model.INT8:
		q.scale = make([]float32, out)
		q.i8 = make([]int8, len(w))
		for o := 0; o < out; o++ {
			row := w[o*in : (o+1)*in]
			var m float32
			for _, v := range row {
				m = max(m, float32(math.Abs(float64(v))))
			}
			if m == 0 {
				continue
			}
			s := m / 127
			q.scale[o] = s
			for i, v := range row {
				q.i8[o*in+i] = int8(max(-127, min(127, math.Round(float64(v/s)))))
			}
		}
	}
	return q
}

// The conversions are internal/half's, the project's one decoder (its
// fp16 widening is the C kernel's, bit for bit).
var (
	toBF16   = half.BF16FromFloat32
	fromBF16 = half.BF16ToFloat32
	toFP16   = half.FromFloat32
	fromFP16 = half.ToFloat32
)

// fcForwardQRef is the scalar reference of the streaming FC:
// y[b,o] = bias[o] + Σ_i w[o,i]·x[b,i] over output rows [o0, o1).
func fcForwardQRef(q *qfc, n int, x, bias, y []float32, o0, o1 int) {
	for b := 0; b < n; b++ {
		xb := x[b*q.in : (b+1)*q.in]
		for o := o0; o < o1; o++ {
			var acc float32
			at := o * q.in
			switch q.prec {
			case model.FP32:
				for i, v := range q.f32[at : at+q.in] {
					acc += v * xb[i]
				}
			case model.BF16:
				for i, v := range q.h[at : at+q.in] {
					acc += fromBF16(v) * xb[i]
				}
			case model.FP16:
				for i, v := range q.h[at : at+q.in] {
					acc += fromFP16(v) * xb[i]
				}
				acc *= q.scale[o]
			case model.INT8:
				for i, v := range q.i8[at : at+q.in] {
					acc += float32(v) * xb[i]
				}
				acc *= q.scale[o]
			}
			y[b*q.out+o] = bias[o] + acc
		}
	}
}

// fcForwardQ runs the reduced-precision FC split over the cores by output
// rows (each piece streams its share of the weights once for the batch).
func fcForwardQ(q *qfc, n int, x, bias, y []float32) {
	w := min(workers(), maxPieces)
	var buf [maxPieces]piece
	pieces := buf[:0]
	step := roundUp((q.out+w-1)/w, 16)
	for o := 0; o < q.out; o += step {
		pieces = append(pieces, piece{kind: pieceFCQ, fcq: fcqArgs{q: q, n: n, x: x, bias: bias, y: y, o0: o, o1: min(q.out, o+step)}})
	}
	runPieces(pieces)
}

type fcqArgs struct {
	q          *qfc
	n          int
	x, bias, y []float32
	o0, o1     int
}
