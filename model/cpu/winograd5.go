package cpu

import "github.com/leafwatch/leafwatch/model"

// Winograd F(3×3, 5×5) for conv2 (5×5, stride 1, pad 2; the largest
// convolution once conv3–5 run as F(2×2, 3×3)): 7×7 input tiles, 49 GEMMs
// with the transformed filters, 49 multiplies per 3×3 outputs instead of
// 225, and 27×27 outputs are exactly 9×9 tiles. The interpolation points
// are 0, ±1, ±2, ½ and ∞:
//
//	Aᵀ = [1 1 1 1 1 1 0; 0 1 −1 2 −2 ½ 0; 0 1 1 4 4 ¼ 1]
//	Bᵀ = [−2 4 5/2 −5 −½ 1 0; 0 2 −2 −9/2 ½ 1 0; 0 −2 6 −7/2 −3/2 1 0;
//	      0 1 −3/2 −2 3/2 1 0; 0 −1 5/2 0 −5/2 1 0; 0 4 0 −5 0 1 0;
//	      0 −2 4 5/2 −5 −½ 1]
//	G  = [−½ 0 0 0 0; −⅓ −⅓ −⅓ −⅓ −⅓; 1/9 −1/9 1/9 −1/9 1/9;
//	      1/36 1/18 1/9 2/9 4/9; −1/60 1/30 −1/15 2/15 −4/15;
//	      32/45 16/45 8/45 4/45 2/45; 0 0 0 0 1]
//
// (derived and checked in exact rational arithmetic). G's fractions go into
// the filters, in float64, once per classifier. Aᵀ multiplies only by powers
// of two; Bᵀ's products are rounded one by one and summed left to right in
// both the Go references (an explicit float32 conversion keeps Go from
// fusing a product into an add) and the C (compiled without contraction),
// so the two agree bit for bit on every architecture. Against the direct
// convolution it stays within ~2e-5 relative on conv2's outputs (measured
// in TestWinogradMatchesDirect, the same as F(2×2, 5×5) with its six
// points); its filters take 49/25 of conv2's weights (+2.3 MB).

// winoG5 is G for F(3×3, 5×5).
var winoG5 = [7][5]float64{
	{-1.0 / 2, 0, 0, 0, 0},
	{-1.0 / 3, -1.0 / 3, -1.0 / 3, -1.0 / 3, -1.0 / 3},
	{1.0 / 9, -1.0 / 9, 1.0 / 9, -1.0 / 9, 1.0 / 9},
	{1.0 / 36, 1.0 / 18, 1.0 / 9, 2.0 / 9, 4.0 / 9},
	{-1.0 / 60, 1.0 / 30, -1.0 / 15, 2.0 / 15, -4.0 / 15},
	{32.0 / 45, 16.0 / 45, 8.0 / 45, 4.0 / 45, 2.0 / 45},
	{0, 0, 0, 0, 1},
}

// transformFilters5 computes U = G g Gᵀ for every 5×5 filter of l, laid out
// as transformFilters' (49 matrices coutG × cinG per group).
func transformFilters5(l *model.Layer, in model.Shape3, w []float32) *winoWeights {
	cinG, coutG := in.C/l.Groups, l.Out/l.Groups
	ww := &winoWeights{u: make([]float32, l.Groups*49*coutG*cinG), coutG: coutG, cinG: cinG, side: 7}
	for g := 0; g < l.Groups; g++ {
		u := ww.u[g*49*coutG*cinG:]
		for o := 0; o < coutG; o++ {
			for c := 0; c < cinG; c++ {
				f := w[((g*coutG+o)*cinG+c)*25:][:25]
				var gg [7][5]float64 // G g
				for r := 0; r < 7; r++ {
					for s := 0; s < 5; s++ {
						for k := 0; k < 5; k++ {
							gg[r][s] += winoG5[r][k] * float64(f[k*5+s])
						}
					}
				}
				for r := 0; r < 7; r++ { // (G g) Gᵀ
					for s := 0; s < 7; s++ {
						var v float64
						for k := 0; k < 5; k++ {
							v += gg[r][k] * winoG5[s][k]
						}
						u[((r*7+s)*coutG+o)*cinG+c] = float32(v)
					}
				}
			}
		}
	}
	return ww
}

// bt7 is Bᵀ applied to seven values, as winograd.c's BT7 computes it.
func bt7(d0, d1, d2, d3, d4, d5, d6 float32) [7]float32 {
	return [7]float32{
		float32(-2*d0) + float32(4*d1) + float32(2.5*d2) - float32(5*d3) - float32(0.5*d4) + d5,
		float32(2*d1) - float32(2*d2) - float32(4.5*d3) + float32(0.5*d4) + d5,
		-float32(2*d1) + float32(6*d2) - float32(3.5*d3) - float32(1.5*d4) + d5,
		d1 - float32(1.5*d2) - float32(2*d3) + float32(1.5*d4) + d5,
		-d1 + float32(2.5*d2) - float32(2.5*d4) + d5,
		float32(4*d1) - float32(5*d3) + d5,
		-float32(2*d1) + float32(4*d2) + float32(2.5*d3) - float32(5*d4) - float32(0.5*d5) + d6,
	}
}

// at7 is Aᵀ applied to seven values (products by powers of two: exact).
func at7(q [7]float32) [3]float32 {
	return [3]float32{
		q[0] + q[1] + q[2] + q[3] + q[4] + q[5],
		(q[1] - q[2]) + 2*(q[3]-q[4]) + 0.5*q[5],
		(q[1] + q[2]) + 4*(q[3]+q[4]) + 0.25*q[5] + q[6],
	}
}

// winograd5InRef is lw_wino5_in (winograd.c) in Go: V[ξ·step+c·T+t] for
// channels [c0, c1) of nb images xs apart, ξ over the 49 transforms, t over
// the 3×3 output tiles.
func winograd5InRef(x []float32, xs, nb, h, w, c0, c1 int, v []float32, step, T int) {
	th, tw := (h+2)/3, (w+2)/3
	for c := c0; c < c1; c++ {
		for j := 0; j < nb; j++ {
			plane := x[j*xs+c*h*w:][:h*w]
			for ty := 0; ty < th; ty++ {
				for tx := 0; tx < tw; tx++ {
					var d [49]float32
					var b [7][7]float32
					winoGather(plane, h, w, 3*ty-2, 3*tx-2, 7, d[:])
					for s := 0; s < 7; s++ {
						o := bt7(d[0*7+s], d[1*7+s], d[2*7+s], d[3*7+s], d[4*7+s], d[5*7+s], d[6*7+s])
						for r := 0; r < 7; r++ {
							b[r][s] = o[r]
						}
					}
					at := c*T + j*th*tw + ty*tw + tx
					for r := 0; r < 7; r++ {
						o := bt7(b[r][0], b[r][1], b[r][2], b[r][3], b[r][4], b[r][5], b[r][6])
						for s := 0; s < 7; s++ {
							v[at+(r*7+s)*step] = o[s]
						}
					}
				}
			}
		}
	}
}

// winograd5OutRef is lw_wino5_out in Go: output channels [co0, co1) of nb
// images (ys apart in y) from M[ξ·step+co·T+t], plus bias, rectified when
// relu is set.
func winograd5OutRef(m []float32, step, T, nb, oh, ow int, bias []float32, relu bool, y []float32, ys, co0, co1 int) {
	th, tw := (oh+2)/3, (ow+2)/3
	for co := co0; co < co1; co++ {
		for j := 0; j < nb; j++ {
			out := y[j*ys+co*oh*ow:][:oh*ow]
			for ty := 0; ty < th; ty++ {
				for tx := 0; tx < tw; tx++ {
					at := co*T + j*th*tw + ty*tw + tx
					var a [3][7]float32 // Aᵀ M
					for s := 0; s < 7; s++ {
						var q [7]float32
						for r := range q {
							q[r] = m[at+(r*7+s)*step]
						}
						col := at7(q)
						for r := range col {
							a[r][s] = col[r]
						}
					}
					for r := 0; r < 3; r++ {
						oy := 3*ty + r
						if oy >= oh {
							break
						}
						row := at7(a[r])
						for s, v := range row {
							ox := 3*tx + s
							if ox >= ow {
								break
							}
							v += bias[co]
							if relu && v < 0 { // as the C writes it: max would turn −0 into +0
								v = 0
							}
							out[oy*ow+ox] = v
						}
					}
				}
			}
		}
	}
}
