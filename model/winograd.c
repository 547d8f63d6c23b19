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

// y (channel co of image j at y + j·ys + co·oh·ow) = Aᵀ M A + bias,
// rectified when relu is set, for output channels [co0, co1); M[xi·step +
// co·T + t].
void lw_wino_out(const float *M, size_t step, int T, int nb, int oh, int ow, const float *bias, int relu, float *y,
                 size_t ys, int co0, int co1) {
	int th = (oh + 1) / 2, tw = (ow + 1) / 2;
	for (int co = co0; co < co1; co++)
		for (int j = 0; j < nb; j++) {
			float *out = y + (size_t)j * ys + (size_t)co * oh * ow;
			for (int ty = 0; ty < th; ty++)
				for (int tx = 0; tx < tw; tx++) {
					size_t t = (size_t)j * th * tw + ty * tw + tx;
					const float *m = M + (size_t)co * T + t;
					float a[2][4]; // Aᵀ M
					for (int s = 0; s < 4; s++) {
						float m0 = m[(0 * 4 + s) * step], m1 = m[(1 * 4 + s) * step];
						float m2 = m[(2 * 4 + s) * step], m3 = m[(3 * 4 + s) * step];
						a[0][s] = m0 + m1 + m2;
						a[1][s] = m1 - m2 - m3;
					}
					for (int r = 0; r < 2; r++) {
						int oy = 2 * ty + r;
						if (oy >= oh) break;
						float v0 = a[r][0] + a[r][1] + a[r][2] + bias[co];
						float v1 = a[r][1] - a[r][2] - a[r][3] + bias[co];
						if (relu) {
							v0 = v0 < 0 ? 0 : v0;
							v1 = v1 < 0 ? 0 : v1;
						}
						out[oy * ow + 2 * tx] = v0;
						if (2 * tx + 1 < ow) out[oy * ow + 2 * tx + 1] = v1;
					}
				}
		}
}
