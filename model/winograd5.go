package model

// Winograd F(2×2, 5×5) for conv2 (5×5, stride 1, pad 2; the largest
// convolution once conv3–5 run as F(2×2, 3×3)): 6×6 input tiles, 36 GEMMs
// with the transformed filters, 36 multiplies per 2×2 outputs instead of
// 100. The interpolation points are 0, ±1, ±2 and ∞:
//
//	Aᵀ = [1 1 1 1 1 0; 0 1 −1 2 −2 1]
//	Bᵀ = [4 0 −5 0 1 0; 0 −4 −4 1 1 0; 0 4 −4 −1 1 0;
//	      0 −2 −1 2 1 0; 0 2 −1 −2 1 0; 0 4 0 −5 0 1]
//	G  = [¼ 0 0 0 0; −⅙ −⅙ −⅙ −⅙ −⅙; −⅙ ⅙ −⅙ ⅙ −⅙;
//	      1/24 1/12 ⅙ ⅓ ⅔; 1/24 −1/12 ⅙ −⅓ ⅔; 0 0 0 0 1]
//
// (derived and checked in exact rational arithmetic). Bᵀ and Aᵀ multiply
// only by 1, 2, 4 and 5, written so that every product is by a power of
// two: the input and output transforms round like additions, the same in C
// and Go on every architecture. G's fractions go into the filters, in
// float64, once per classifier. The larger tile costs accuracy against the
// direct convolution (a few 1e-6 relative on conv2's outputs, measured in
// TestWinogradMatchesDirect) and 36/25 of conv2's weights (+1.8 MB).

// winoG5 is G for F(2×2, 5×5).
var winoG5 = [6][5]float64{
	{1.0 / 4, 0, 0, 0, 0},
	{-1.0 / 6, -1.0 / 6, -1.0 / 6, -1.0 / 6, -1.0 / 6},
	{-1.0 / 6, 1.0 / 6, -1.0 / 6, 1.0 / 6, -1.0 / 6},
	{1.0 / 24, 1.0 / 12, 1.0 / 6, 1.0 / 3, 2.0 / 3},
	{1.0 / 24, -1.0 / 12, 1.0 / 6, -1.0 / 3, 2.0 / 3},
	{0, 0, 0, 0, 1},
}

// transformFilters5 computes U = G g Gᵀ for every 5×5 filter of l, laid out
// as transformFilters' (36 matrices coutG × cinG per group).
func transformFilters5(l *Layer, in Shape3, w []float32) *winoWeights {
	cinG, coutG := in.C/l.Groups, l.Out/l.Groups
	ww := &winoWeights{u: make([]float32, l.Groups*36*coutG*cinG), coutG: coutG, cinG: cinG, side: 6}
	for g := 0; g < l.Groups; g++ {
		u := ww.u[g*36*coutG*cinG:]
		for o := 0; o < coutG; o++ {
			for c := 0; c < cinG; c++ {
				f := w[((g*coutG+o)*cinG+c)*25:][:25]
				var gg [6][5]float64 // G g
				for r := 0; r < 6; r++ {
					for s := 0; s < 5; s++ {
						for k := 0; k < 5; k++ {
							gg[r][s] += winoG5[r][k] * float64(f[k*5+s])
						}
					}
				}
				for r := 0; r < 6; r++ { // (G g) Gᵀ
					for s := 0; s < 6; s++ {
						var v float64
						for k := 0; k < 5; k++ {
							v += gg[r][k] * winoG5[s][k]
						}
						u[((r*6+s)*coutG+o)*cinG+c] = float32(v)
					}
				}
			}
		}
	}
	return ww
}

// bt6 is Bᵀ applied to six values, as lw_wino5_in's bt6 computes it.
func bt6(d0, d1, d2, d3, d4, d5 float32) [6]float32 {
	return [6]float32{
		(4*d0 - (4*d2 + d2)) + d4,
		(d3 + d4) - 4*(d1+d2),
		(d4 - d3) + 4*(d1-d2),
		(d4 - d2) + 2*(d3-d1),
		(d4 - d2) - 2*(d3-d1),
		(4*d1 - (4*d3 + d3)) + d5,
	}
}

// winograd5InRef is lw_wino5_in (winograd.c) in Go: V[ξ·step+c·T+t] for
// channels [c0, c1) of nb images xs apart, ξ over the 36 transforms.
func winograd5InRef(x []float32, xs, nb, h, w, c0, c1 int, v []float32, step, T int) {
	th, tw := (h+1)/2, (w+1)/2
	for c := c0; c < c1; c++ {
		for j := 0; j < nb; j++ {
			plane := x[j*xs+c*h*w:][:h*w]
			for ty := 0; ty < th; ty++ {
				for tx := 0; tx < tw; tx++ {
					var d, b [6][6]float32
					for r := 0; r < 6; r++ {
						iy := 2*ty - 2 + r
						for s := 0; s < 6; s++ {
							if ix := 2*tx - 2 + s; iy >= 0 && iy < h && ix >= 0 && ix < w {
								d[r][s] = plane[iy*w+ix]
							}
						}
					}
					for s := 0; s < 6; s++ {
						o := bt6(d[0][s], d[1][s], d[2][s], d[3][s], d[4][s], d[5][s])
						for r := 0; r < 6; r++ {
							b[r][s] = o[r]
						}
					}
					at := c*T + j*th*tw + ty*tw + tx
					for r := 0; r < 6; r++ {
						o := bt6(b[r][0], b[r][1], b[r][2], b[r][3], b[r][4], b[r][5])
						for s := 0; s < 6; s++ {
							v[at+(r*6+s)*step] = o[s]
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
	th, tw := (oh+1)/2, (ow+1)/2
	for co := co0; co < co1; co++ {
		for j := 0; j < nb; j++ {
			out := y[j*ys+co*oh*ow:][:oh*ow]
			for ty := 0; ty < th; ty++ {
				for tx := 0; tx < tw; tx++ {
					at := co*T + j*th*tw + ty*tw + tx
					var a [2][6]float32
					for s := 0; s < 6; s++ {
						var q [6]float32
						for r := range q {
							q[r] = m[at+(r*6+s)*step]
						}
						a[0][s] = (((q[0] + q[1]) + q[2]) + q[3]) + q[4]
						a[1][s] = ((q[1] - q[2]) + 2*(q[3]-q[4])) + q[5]
					}
					for r := 0; r < 2; r++ {
						oy := 2*ty + r
						if oy >= oh {
							break
						}
						q := a[r]
						v0 := ((((q[0] + q[1]) + q[2]) + q[3]) + q[4]) + bias[co]
						v1 := (((q[1] - q[2]) + 2*(q[3]-q[4])) + q[5]) + bias[co]
						if relu { // as the C writes it: max would turn −0 into +0
							if v0 < 0 {
								v0 = 0
							}
							if v1 < 0 {
								v1 = 0
							}
						}
						out[oy*ow+2*tx] = v0
						if 2*tx+1 < ow {
							out[oy*ow+2*tx+1] = v1
						}
					}
				}
			}
		}
	}
}
