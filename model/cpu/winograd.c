//go:build cgo && !purego

// Winograd F(2×2, 3×3) transforms for the 3×3, stride-1 convolutions
// (conv3–5, pad 1, and conv1's space-to-depth form, pad 0): each 4×4 input
// tile becomes 16 values (V = Bᵀ d B), 16 GEMMs multiply them by the
// transformed filters (U = G g Gᵀ, computed once per model), and each
// tile's 16 products become a 2×2 output (Y = Aᵀ M A) — 16 multiplies per
// 4 outputs instead of 36. Only additions
// and subtractions here (the ½ of G is in U), so the results stay within a
// few units in the last place of the direct convolution. winogradIn and
// winogradOut in Go are the references and the pure-Go build's code.
// Below them, F(3×3, 5×5) for conv2 on the same layout.

#include <stddef.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LW_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define LW_CLONES
#endif

// V[xi·step + c·T + t] for channels [c0, c1) of nb images (x: image after
// image, xs apart; channel c at x + c·h·w), t = j·th·tw + ty·tw + tx; pad
// 1 ("same", conv3–5) or 0 ("valid", conv1 after its space-to-depth
// rearrangement, spacedepth.go), whose output is (h + 2·pad − 2) square.
void lw_wino_in(const float *x, size_t xs, int nb, int h, int w, int pad, int c0, int c1, float *V, size_t step,
                int T) {
	int th = (h + 2 * pad - 1) / 2, tw = (w + 2 * pad - 1) / 2;
	for (int c = c0; c < c1; c++)
		for (int j = 0; j < nb; j++) {
			const float *p = x + (size_t)j * xs + (size_t)c * h * w;
			for (int ty = 0; ty < th; ty++)
				for (int tx = 0; tx < tw; tx++) {
					float d[4][4];
					for (int r = 0; r < 4; r++) {
						int iy = 2 * ty - pad + r;
						for (int s = 0; s < 4; s++) {
							int ix = 2 * tx - pad + s;
							d[r][s] = iy >= 0 && iy < h && ix >= 0 && ix < w ? p[iy * w + ix] : 0;
						}
					}
					float b[4][4]; // Bᵀ d
					for (int s = 0; s < 4; s++) {
						b[0][s] = d[0][s] - d[2][s];
						b[1][s] = d[1][s] + d[2][s];
						b[2][s] = d[2][s] - d[1][s];
						b[3][s] = d[1][s] - d[3][s];
					}
					size_t t = (size_t)j * th * tw + ty * tw + tx;
					float *v = V + (size_t)c * T + t;
					for (int r = 0; r < 4; r++) { // (Bᵀ d) B
						v[(r * 4 + 0) * step] = b[r][0] - b[r][2];
						v[(r * 4 + 1) * step] = b[r][1] + b[r][2];
						v[(r * 4 + 2) * step] = b[r][2] - b[r][1];
						v[(r * 4 + 3) * step] = b[r][1] - b[r][3];
					}
				}
		}
}

// Tiles go through the transforms a block at a time: transformed in a loop
// over the block's tiles that the compiler vectorises (the transforms' many
// streams of consecutive values), gathered from or scattered to the image
// planes one tile after another. Tile by tile, conv2's output transform ran
// at ~1 ms per image, longer than its GEMMs.
#define WBLK 128

// scatter_tiles writes the m×m outputs of tiles [t0, t0+n) (o[(r·m+s)·ld
// + t]: row r, column s of tile t0+t) into an oh×ow plane, tw tiles per
// row, leaving out what falls past its edges.
static void scatter_tiles(const float *o, int ld, int m, int n, int t0, int tw, float *out, int oh, int ow) {
	for (int t = 0, ty = t0 / tw, tx = t0 % tw; t < n; t++) {
		for (int r = 0; r < m && m * ty + r < oh; r++) {
			float *q = out + (size_t)(m * ty + r) * ow + m * tx;
			for (int s = 0; s < m && m * tx + s < ow; s++) q[s] = o[(r * m + s) * ld + t];
		}
		if (++tx == tw) tx = 0, ty++;
	}
}

// y (channel co of image j at y + j·ys + co·oh·ow) = Aᵀ M A + bias,
// rectified when relu is set, for output channels [co0, co1); M[xi·step +
// co·T + t].
LW_CLONES void lw_wino_out(const float *M, size_t step, int T, int nb, int oh, int ow, const float *bias, int relu,
                           float *y, size_t ys, int co0, int co1) {
	int th = (oh + 1) / 2, tw = (ow + 1) / 2, nt = th * tw;
	float o[4][WBLK];
	for (int co = co0; co < co1; co++)
		for (int j = 0; j < nb; j++) {
			float *out = y + (size_t)j * ys + (size_t)co * oh * ow, b = bias[co];
			const float *mb = M + (size_t)co * T + (size_t)j * nt;
			for (int t0 = 0; t0 < nt; t0 += WBLK) {
				int n = nt - t0 < WBLK ? nt - t0 : WBLK;
				const float *m = mb + t0;
				for (int t = 0; t < n; t++) {
					float a[2][4]; // Aᵀ M
					for (int s = 0; s < 4; s++) {
						float m0 = m[(0 * 4 + s) * step + t], m1 = m[(1 * 4 + s) * step + t];
						float m2 = m[(2 * 4 + s) * step + t], m3 = m[(3 * 4 + s) * step + t];
						a[0][s] = m0 + m1 + m2;
						a[1][s] = m1 - m2 - m3;
					}
					for (int r = 0; r < 2; r++) {
						float v0 = a[r][0] + a[r][1] + a[r][2] + b;
						float v1 = a[r][1] - a[r][2] - a[r][3] + b;
						if (relu) {
							v0 = v0 < 0 ? 0 : v0;
							v1 = v1 < 0 ? 0 : v1;
						}
						o[2 * r][t] = v0;
						o[2 * r + 1][t] = v1;
					}
				}
				scatter_tiles(o[0], WBLK, 2, n, t0, tw, out, oh, ow);
			}
		}
}

// F(3×3, 5×5) for conv2 (5×5, stride 1, pad 2): 7×7 input tiles, 49
// transforms, 49 multiplies per 3×3 outputs instead of 225 (winograd5.go
// has the matrices). Bᵀ has fractions (5/2, 9/2, …): each product is
// rounded by itself and the sums run left to right, as in bt7 in Go, with
// no contraction into fused multiply-adds (GCC contracts by default where
// the target has FMA, arm64 always), so C and Go agree bit for bit.
#define LW_NOFMA __attribute__((optimize("fp-contract=off")))

#define BT7(d0, d1, d2, d3, d4, d5, d6, o0, o1, o2, o3, o4, o5, o6)                                   \
	do {                                                                                              \
		float x0_ = (d0), x1_ = (d1), x2_ = (d2), x3_ = (d3), x4_ = (d4), x5_ = (d5), x6_ = (d6);   \
		(o0) = ((((-2 * x0_ + 4 * x1_) + 2.5f * x2_) - 5 * x3_) - 0.5f * x4_) + x5_;               \
		(o1) = (((2 * x1_ - 2 * x2_) - 4.5f * x3_) + 0.5f * x4_) + x5_;                            \
		(o2) = (((-(2 * x1_) + 6 * x2_) - 3.5f * x3_) - 1.5f * x4_) + x5_;                         \
		(o3) = (((x1_ - 1.5f * x2_) - 2 * x3_) + 1.5f * x4_) + x5_;                                \
		(o4) = ((-x1_ + 2.5f * x2_) - 2.5f * x4_) + x5_;                                           \
		(o5) = (4 * x1_ - 5 * x3_) + x5_;                                                          \
		(o6) = ((((-(2 * x1_) + 4 * x2_) + 2.5f * x3_) - 5 * x4_) - 0.5f * x5_) + x6_;             \
	} while (0)

// AT7 is Aᵀ applied to seven values (products by powers of two: exact).
#define AT7(q0, q1, q2, q3, q4, q5, q6, o0, o1, o2)                                                   \
	do {                                                                                              \
		float y0_ = (q0), y1_ = (q1), y2_ = (q2), y3_ = (q3), y4_ = (q4), y5_ = (q5), y6_ = (q6);   \
		(o0) = ((((y0_ + y1_) + y2_) + y3_) + y4_) + y5_;                                          \
		(o1) = ((y1_ - y2_) + 2 * (y3_ - y4_)) + 0.5f * y5_;                                       \
		(o2) = (((y1_ + y2_) + 4 * (y3_ + y4_)) + 0.25f * y5_) + y6_;                              \
	} while (0)

#define WBLK7 64

// bt7_row applies Bᵀ across seven rows of n values of q (WBLK7 apart) into
// seven rows of V (restrict: they never overlap, and the compiler needs to
// know that to vectorise).
LW_NOFMA LW_CLONES static void bt7_row(const float *restrict q, float *restrict v0, float *restrict v1,
                                       float *restrict v2, float *restrict v3, float *restrict v4,
                                       float *restrict v5, float *restrict v6, int n) {
	for (int t = 0; t < n; t++)
		BT7(q[t], q[WBLK7 + t], q[2 * WBLK7 + t], q[3 * WBLK7 + t], q[4 * WBLK7 + t], q[5 * WBLK7 + t],
		    q[6 * WBLK7 + t], v0[t], v1[t], v2[t], v3[t], v4[t], v5[t], v6[t]);
}

// V for the 7×7 tiles (3×3 outputs each), as lw_wino_in's layout.
LW_NOFMA LW_CLONES void lw_wino5_in(const float *x, size_t xs, int nb, int h, int w, int c0, int c1, float *V,
                                    size_t step, int T) {
	int th = (h + 2) / 3, tw = (w + 2) / 3, nt = th * tw;
	float d[49][WBLK7], e[49][WBLK7];
	for (int c = c0; c < c1; c++)
		for (int j = 0; j < nb; j++) {
			const float *p = x + (size_t)j * xs + (size_t)c * h * w;
			float *vb = V + (size_t)c * T + (size_t)j * nt;
			for (int t0 = 0; t0 < nt; t0 += WBLK7) {
				int n = nt - t0 < WBLK7 ? nt - t0 : WBLK7;
				for (int t = 0, ty = t0 / tw, tx = t0 % tw; t < n; t++) {
					int iy0 = 3 * ty - 2, ix0 = 3 * tx - 2;
					if (iy0 >= 0 && iy0 + 7 <= h && ix0 >= 0 && ix0 + 7 <= w) {
						for (int r = 0; r < 7; r++)
							for (int s = 0; s < 7; s++) d[r * 7 + s][t] = p[(iy0 + r) * w + ix0 + s];
					} else
						for (int r = 0; r < 7; r++) {
							int iy = iy0 + r;
							for (int s = 0; s < 7; s++) {
								int ix = ix0 + s;
								d[r * 7 + s][t] = iy >= 0 && iy < h && ix >= 0 && ix < w ? p[iy * w + ix] : 0;
							}
						}
					if (++tx == tw) tx = 0, ty++;
				}
				// Bᵀ d column by column into e, then (Bᵀ d) B row by row into V.
				for (int s = 0; s < 7; s++)
					for (int t = 0; t < n; t++)
						BT7(d[s][t], d[7 + s][t], d[14 + s][t], d[21 + s][t], d[28 + s][t], d[35 + s][t], d[42 + s][t],
						    e[s][t], e[7 + s][t], e[14 + s][t], e[21 + s][t], e[28 + s][t], e[35 + s][t], e[42 + s][t]);
				float *v = vb + t0;
				for (int r = 0; r < 7; r++) {
					float *v0 = v + (size_t)(r * 7) * step;
					bt7_row(e[r * 7], v0, v0 + step, v0 + 2 * step, v0 + 3 * step, v0 + 4 * step, v0 + 5 * step,
					        v0 + 6 * step, n);
				}
			}
		}
}

// at7_col applies Aᵀ down one column of n tiles' products (m0…m6: the
// column's seven rows) into three rows of a; at7_row applies it across
// seven rows of a (WBLK7 apart) into three outputs per tile, plus the bias,
// rectified when relu is set. Separate loops with restrict pointers, so the
// compiler vectorises them over the tiles.
LW_CLONES static void at7_col(const float *restrict m0, const float *restrict m1, const float *restrict m2,
                              const float *restrict m3, const float *restrict m4, const float *restrict m5,
                              const float *restrict m6, float *restrict a0, float *restrict a1, float *restrict a2,
                              int n) {
	for (int t = 0; t < n; t++) AT7(m0[t], m1[t], m2[t], m3[t], m4[t], m5[t], m6[t], a0[t], a1[t], a2[t]);
}

LW_CLONES static void at7_row(const float *restrict q, float *restrict o0, float *restrict o1, float *restrict o2,
                              float b, int relu, int n) {
	for (int t = 0; t < n; t++) {
		float v0, v1, v2;
		AT7(q[t], q[WBLK7 + t], q[2 * WBLK7 + t], q[3 * WBLK7 + t], q[4 * WBLK7 + t], q[5 * WBLK7 + t],
		    q[6 * WBLK7 + t], v0, v1, v2);
		v0 += b, v1 += b, v2 += b;
		if (relu) {
			v0 = v0 < 0 ? 0 : v0;
			v1 = v1 < 0 ? 0 : v1;
			v2 = v2 < 0 ? 0 : v2;
		}
		o0[t] = v0, o1[t] = v1, o2[t] = v2;
	}
}

LW_CLONES void lw_wino5_out(const float *M, size_t step, int T, int nb, int oh, int ow, const float *bias, int relu,
                            float *y, size_t ys, int co0, int co1) {
	int th = (oh + 2) / 3, tw = (ow + 2) / 3, nt = th * tw;
	float a[3][7][WBLK7], o[9][WBLK7]; // a[r][s]: row r of Aᵀ M, column s
	for (int co = co0; co < co1; co++)
		for (int j = 0; j < nb; j++) {
			float *out = y + (size_t)j * ys + (size_t)co * oh * ow;
			const float *mb = M + (size_t)co * T + (size_t)j * nt;
			for (int t0 = 0; t0 < nt; t0 += WBLK7) {
				int n = nt - t0 < WBLK7 ? nt - t0 : WBLK7;
				const float *m = mb + t0;
				for (int s = 0; s < 7; s++)
					at7_col(m + (size_t)s * step, m + (size_t)(7 + s) * step, m + (size_t)(14 + s) * step,
					        m + (size_t)(21 + s) * step, m + (size_t)(28 + s) * step, m + (size_t)(35 + s) * step,
					        m + (size_t)(42 + s) * step, a[0][s], a[1][s], a[2][s], n);
				for (int r = 0; r < 3; r++) at7_row(a[r][0], o[3 * r], o[3 * r + 1], o[3 * r + 2], bias[co], relu, n);
				scatter_tiles(o[0], WBLK7, 3, n, t0, tw, out, oh, ow);
			}
		}
}
