//go:build cgo && !purego

// Winograd F(2×2, 3×3) transforms for the 3×3, stride-1, pad-1
// convolutions (conv3–5): each 4×4 input tile becomes 16 values (V = Bᵀ d
// B), 16 GEMMs multiply them by the transformed filters (U = G g Gᵀ,
// computed once per model), and each tile's 16 products become a 2×2 output
// (Y = Aᵀ M A) — 16 multiplies per 4 outputs instead of 36. Only additions
// and subtractions here (the ½ of G is in U), so the results stay within a
// few units in the last place of the direct convolution. winogradIn and
// winogradOut in Go are the references and the pure-Go build's code.

#include <stddef.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LW_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define LW_CLONES
#endif

// V[xi·step + c·T + t] for channels [c0, c1) of nb images (x: image after
// image, xs apart; channel c at x + c·h·w), t = j·th·tw + ty·tw + tx.
void lw_wino_in(const float *x, size_t xs, int nb, int h, int w, int c0, int c1, float *V, size_t step, int T) {
	int th = (h + 1) / 2, tw = (w + 1) / 2;
	for (int c = c0; c < c1; c++)
		for (int j = 0; j < nb; j++) {
			const float *p = x + (size_t)j * xs + (size_t)c * h * w;
			for (int ty = 0; ty < th; ty++)
				for (int tx = 0; tx < tw; tx++) {
					float d[4][4];
					for (int r = 0; r < 4; r++) {
						int iy = 2 * ty - 1 + r;
						for (int s = 0; s < 4; s++) {
							int ix = 2 * tx - 1 + s;
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

// scatter_tiles writes the 2×2 outputs of tiles [t0, t0+n) (o[k][t]: row
// k/2, column k%2 of tile t0+t) into an oh×ow plane, tw tiles per row.
static void scatter_tiles(float o[4][WBLK], int n, int t0, int tw, float *out, int oh, int ow) {
	for (int t = 0, ty = t0 / tw, tx = t0 % tw; t < n; t++) {
		float *q = out + 2 * ty * ow + 2 * tx;
		int right = 2 * tx + 1 < ow;
		q[0] = o[0][t];
		if (right) q[1] = o[1][t];
		if (2 * ty + 1 < oh) {
			q[ow] = o[2][t];
			if (right) q[ow + 1] = o[3][t];
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
				scatter_tiles(o, n, t0, tw, out, oh, ow);
			}
		}
}

// F(2×2, 5×5) for conv2 (5×5, stride 1, pad 2): 6×6 input tiles, 36
// transforms, 36 multiplies per 2×2 outputs instead of 100. The points are
// 0, ±1, ±2 and ∞, so Bᵀ and Aᵀ hold only 1, 2, 4 and 5; every product here
// is by a power of two (5·d is written 4·d + d), which keeps each value
// exact whether or not the compiler fuses a multiply into an add, and the C
// bit-identical to winograd5InRef/winograd5OutRef on every architecture.
// The fractions of G (down to 1/24) live in the filters, computed in
// float64 once per model.

// BT6 is Bᵀ applied to six values (d0…d5 read once each, before any o is
// written).
#define BT6(d0, d1, d2, d3, d4, d5, o0, o1, o2, o3, o4, o5)                                                 \
	do {                                                                                                  \
		float x0_ = (d0), x1_ = (d1), x2_ = (d2), x3_ = (d3), x4_ = (d4), x5_ = (d5);                   \
		(o0) = (4 * x0_ - (4 * x2_ + x2_)) + x4_;                                                        \
		(o1) = (x3_ + x4_) - 4 * (x1_ + x2_);                                                            \
		(o2) = (x4_ - x3_) + 4 * (x1_ - x2_);                                                            \
		(o3) = (x4_ - x2_) + 2 * (x3_ - x1_);                                                            \
		(o4) = (x4_ - x2_) - 2 * (x3_ - x1_);                                                            \
		(o5) = (4 * x1_ - (4 * x3_ + x3_)) + x5_;                                                        \
	} while (0)

// bt6_row applies Bᵀ across six rows of n values of q (WBLK apart) into
// six rows of V (restrict: they never overlap, and the compiler needs to
// know that to vectorise).
LW_CLONES static void bt6_row(const float *restrict q, float *restrict v0, float *restrict v1, float *restrict v2,
                              float *restrict v3, float *restrict v4, float *restrict v5, int n) {
	for (int t = 0; t < n; t++)
		BT6(q[t], q[WBLK + t], q[2 * WBLK + t], q[3 * WBLK + t], q[4 * WBLK + t], q[5 * WBLK + t], v0[t], v1[t],
		    v2[t], v3[t], v4[t], v5[t]);
}

// V for the 6×6 tiles, as lw_wino_in's layout.
LW_CLONES void lw_wino5_in(const float *x, size_t xs, int nb, int h, int w, int c0, int c1, float *V, size_t step,
                           int T) {
	int th = (h + 1) / 2, tw = (w + 1) / 2, nt = th * tw;
	float d[36][WBLK], e[36][WBLK];
	for (int c = c0; c < c1; c++)
		for (int j = 0; j < nb; j++) {
			const float *p = x + (size_t)j * xs + (size_t)c * h * w;
			float *vb = V + (size_t)c * T + (size_t)j * nt;
			for (int t0 = 0; t0 < nt; t0 += WBLK) {
				int n = nt - t0 < WBLK ? nt - t0 : WBLK;
				for (int t = 0, ty = t0 / tw, tx = t0 % tw; t < n; t++) {
					int iy0 = 2 * ty - 2, ix0 = 2 * tx - 2;
					if (iy0 >= 0 && iy0 + 6 <= h && ix0 >= 0 && ix0 + 6 <= w) {
						for (int r = 0; r < 6; r++)
							for (int s = 0; s < 6; s++) d[r * 6 + s][t] = p[(iy0 + r) * w + ix0 + s];
					} else
						for (int r = 0; r < 6; r++) {
							int iy = iy0 + r;
							for (int s = 0; s < 6; s++) {
								int ix = ix0 + s;
								d[r * 6 + s][t] = iy >= 0 && iy < h && ix >= 0 && ix < w ? p[iy * w + ix] : 0;
							}
						}
					if (++tx == tw) tx = 0, ty++;
				}
				// Bᵀ d column by column into e, then (Bᵀ d) B row by row into V;
				// loops over t without arrays in them, so they vectorise.
				for (int s = 0; s < 6; s++)
					for (int t = 0; t < n; t++)
						BT6(d[s][t], d[6 + s][t], d[12 + s][t], d[18 + s][t], d[24 + s][t], d[30 + s][t], e[s][t],
						    e[6 + s][t], e[12 + s][t], e[18 + s][t], e[24 + s][t], e[30 + s][t]);
				float *v = vb + t0;
				for (int r = 0; r < 6; r++) {
					float *v0 = v + (size_t)(r * 6) * step;
					bt6_row(e[r * 6], v0, v0 + step, v0 + 2 * step, v0 + 3 * step, v0 + 4 * step, v0 + 5 * step, n);
				}
			}
		}
}

LW_CLONES void lw_wino5_out(const float *M, size_t step, int T, int nb, int oh, int ow, const float *bias, int relu,
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
					float a[2][6]; // Aᵀ M
					for (int s = 0; s < 6; s++) {
						float m0 = m[(0 * 6 + s) * step + t], m1 = m[(1 * 6 + s) * step + t];
						float m2 = m[(2 * 6 + s) * step + t], m3 = m[(3 * 6 + s) * step + t];
						float m4 = m[(4 * 6 + s) * step + t], m5 = m[(5 * 6 + s) * step + t];
						a[0][s] = (((m0 + m1) + m2) + m3) + m4;
						a[1][s] = ((m1 - m2) + 2 * (m3 - m4)) + m5;
					}
					for (int r = 0; r < 2; r++) {
						const float *q = a[r];
						float v0 = ((((q[0] + q[1]) + q[2]) + q[3]) + q[4]) + b;
						float v1 = (((q[1] - q[2]) + 2 * (q[3] - q[4])) + q[5]) + b;
						if (relu) {
							v0 = v0 < 0 ? 0 : v0;
							v1 = v1 < 0 ? 0 : v1;
						}
						o[2 * r][t] = v0;
						o[2 * r + 1][t] = v1;
					}
				}
				scatter_tiles(o, n, t0, tw, out, oh, ow);
			}
		}
}
