package model

import (
	"fmt"
	"math"
)

// Precision is how the CPU engine stores the fully connected layers'
// weights. The FC layers hold 90% of AlexNet's weights (219 MB in fp32) and,
// for one image, every weight is read once per inference: their time is
// memory bandwidth. Reduced precision shrinks what is read; activations
// and accumulation stay fp32, and the convolutions are unchanged.
type Precision string

const (
	// FP32 keeps the checkpoint's weights: the default.
	FP32 Precision = "fp32"
	// BF16 keeps each weight's top 16 bits (bfloat16, rounded to nearest
	// even): half the bytes, 8 significant bits.
	BF16 Precision = "bf16"
	// INT8 stores each output row as int8 with one fp32 scale (symmetric,
	// max-abs): a quarter of the bytes.
	INT8 Precision = "int8"
)

// ParsePrecision accepts "", fp32, bf16 and int8.
func ParsePrecision(s string) (Precision, error) {
	switch Precision(s) {
	case "", FP32:
		return FP32, nil
	case BF16, INT8:
		return Precision(s), nil
	}
	return "", fmt.Errorf("precision %q: use fp32, bf16 or int8", s)
}

// qfc is one FC layer's weights in reduced precision, out×in row-major.
type qfc struct {
	out, in int
	bf      []uint16  // BF16
	i8      []int8    // INT8
	scale   []float32 // INT8: per output row
}

// quantizeFC converts w (out×in) to p.
func quantizeFC(p Precision, w []float32, out, in int) *qfc {
	q := &qfc{out: out, in: in}
	switch p {
	case BF16:
		q.bf = make([]uint16, len(w))
		for i, v := range w {
			q.bf[i] = toBF16(v)
		}
	case INT8:
		q.i8 = make([]int8, len(w))
		q.scale = make([]float32, out)
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

// toBF16 rounds to nearest even; NaN stays NaN.
func toBF16(v float32) uint16 {
	b := math.Float32bits(v)
	if v != v {
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

func fromBF16(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// fcForwardQRef is the scalar reference of the reduced-precision FC:
// y[b,o] = bias[o] + Σ_i w[o,i]·x[b,i] over output rows [o0, o1).
func fcForwardQRef(q *qfc, n int, x, bias, y []float32, o0, o1 int) {
	for b := 0; b < n; b++ {
		xb := x[b*q.in : (b+1)*q.in]
		for o := o0; o < o1; o++ {
			var acc float32
			switch {
			case q.bf != nil:
				row := q.bf[o*q.in : (o+1)*q.in]
				for i, v := range row {
					acc += fromBF16(v) * xb[i]
				}
			default:
				row := q.i8[o*q.in : (o+1)*q.in]
				for i, v := range row {
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
