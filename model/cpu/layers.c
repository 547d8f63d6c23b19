//go:build cgo && !purego

// The inference passes between the GEMMs: bias plus ReLU, max pooling and
// LRN. In Go they were scalar loops with a branch per element on
// sign-random data (a ReLU over conv1's output took 1 ms); here they are
// branch-free and vectorised (AVX-512/AVX2 chosen at load time on amd64,
// NEON on arm64). The Go functions they replace (reluForward,
// maxPoolChannels, lrnForward) remain the references and the pure-Go
// build's implementation.

#include <math.h>
#if defined(__x86_64__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif
#include <stddef.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LW_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define LW_CLONES
#endif

// y[c][i] = max(0?, x[c][i] + bias[c]) for rows c of p values; rows are
// ldx and ldy apart (a batched GEMM's output lies image after image in
// each row, the activations channel after channel in each image).
LW_CLONES void lw_bias_act(const float *x, size_t ldx, float *y, size_t ldy, const float *bias, int rows, int p,
                           int relu) {
	for (int c = 0; c < rows; c++) {
		const float *s = x + (size_t)c * ldx;
		float *d = y + (size_t)c * ldy, b = bias[c];
		if (relu)
			for (int i = 0; i < p; i++) {
				float v = s[i] + b;
				d[i] = v < 0 ? 0 : v; // as reluForward: NaN and -0 pass
			}
		else
			for (int i = 0; i < p; i++) d[i] = s[i] + b;
	}
}

// pool3s2_row is one output row of a 3×3, stride-2 window that stays
// inside the image (AlexNet's three pools): e[r]/o[r] are the even and odd
// elements of the window's input row r, so every term is a contiguous load
// and the loop over ox vectorises. The order of comparisons is the
// reference's (row by row, left to right, the first value kept unless a
// later one is strictly greater), so NaN and ±0 come out as there.
LW_CLONES static void pool3s2_row(const float *restrict e0, const float *restrict o0, const float *restrict e1,
                                  const float *restrict o1, const float *restrict e2, const float *restrict o2,
                                  float *restrict out, int ow) {
	for (int ox = 0; ox < ow; ox++) {
		float b = e0[ox], v;
#define POOL_TAKE(p) (v = (p), b = v > b ? v : b)
		POOL_TAKE(o0[ox]), POOL_TAKE(e0[ox + 1]);
		POOL_TAKE(e1[ox]), POOL_TAKE(o1[ox]), POOL_TAKE(e1[ox + 1]);
		POOL_TAKE(e2[ox]), POOL_TAKE(o2[ox]), POOL_TAKE(e2[ox + 1]);
#undef POOL_TAKE
		out[ox] = b;
	}
}

#define POOL_SPLIT_MAX 2048

// Max pooling of channels [c0, c1) of one h×w image into oh×ow, window k,
// stride st, padding pad. A window keeps its first value unless a later one
// is strictly greater, as maxPoolChannels does. 3×3 windows of stride 2
// without padding (AlexNet's) split each input row into its even and odd
// elements once and pool whole output rows with vector loads; a scalar
// window-by-window loop does the rest.
LW_CLONES void lw_maxpool(const float *x, float *y, int h, int w, int oh, int ow, int k, int st, int pad, int c0,
                          int c1) {
	if (k == 3 && st == 2 && pad == 0 && 2 * (ow - 1) + 3 <= w && 2 * (oh - 1) + 3 <= h && w <= POOL_SPLIT_MAX) {
		float ph[3][2][POOL_SPLIT_MAX / 2 + 1]; // [window row][even, odd][i]
		for (int c = c0; c < c1; c++) {
			const float *plane = x + (size_t)c * h * w;
			float *out = y + (size_t)c * oh * ow;
			for (int oy = 0; oy < oh; oy++) {
				for (int r = 0; r < 3; r++) {
					const float *row = plane + (size_t)(2 * oy + r) * w;
					for (int i = 0; 2 * i < w; i++) ph[r][0][i] = row[2 * i];
					for (int i = 0; 2 * i + 1 < w; i++) ph[r][1][i] = row[2 * i + 1];
				}
				pool3s2_row(ph[0][0], ph[0][1], ph[1][0], ph[1][1], ph[2][0], ph[2][1], out + (size_t)oy * ow, ow);
			}
		}
		return;
	}
	for (int c = c0; c < c1; c++) {
		const float *plane = x + (size_t)c * h * w;
		float *out = y + (size_t)c * oh * ow;
		for (int oy = 0; oy < oh; oy++) {
			int y0 = oy * st - pad, y1 = y0 + k < h ? y0 + k : h;
			if (y0 < 0) y0 = 0;
			for (int ox = 0; ox < ow; ox++) {
				int x0 = ox * st - pad, x1 = x0 + k < w ? x0 + k : w;
				if (x0 < 0) x0 = 0;
				float best = plane[y0 * w + x0];
				for (int iy = y0; iy < y1; iy++)
					for (int ix = x0; ix < x1; ix++) {
						float v = plane[iy * w + ix];
						best = v > best ? v : best;
					}
				out[oy * ow + ox] = best;
			}
		}
	}
}

// y[i] = x[i]·(bias + a·s[i])^-0.75 as 1/(√v·√√v), with the reference's
// roundings (a separate multiply and add, no fused one). sqrtf cannot be
// vectorised by the compiler (cgo refuses -fno-math-errno), hence the
// intrinsics.
#if defined(__x86_64__)
__attribute__((target("avx512f"))) static int lrn_scale_avx512(const float *s, const float *x, float *y, int n,
                                                               float a, float bias) {
	int i = 0;
	__m512 va = _mm512_set1_ps(a), vb = _mm512_set1_ps(bias), one = _mm512_set1_ps(1);
	for (; i + 16 <= n; i += 16) {
		__m512 v = _mm512_add_ps(vb, _mm512_mul_ps(va, _mm512_loadu_ps(s + i)));
		__m512 r = _mm512_sqrt_ps(v);
		__m512 f = _mm512_div_ps(one, _mm512_mul_ps(r, _mm512_sqrt_ps(r)));
		_mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), f));
	}
	return i;
}
__attribute__((target("avx"))) static int lrn_scale_avx(const float *s, const float *x, float *y, int n, float a,
                                                        float bias) {
	int i = 0;
	__m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(bias), one = _mm256_set1_ps(1);
	for (; i + 8 <= n; i += 8) {
		__m256 v = _mm256_add_ps(vb, _mm256_mul_ps(va, _mm256_loadu_ps(s + i)));
		__m256 r = _mm256_sqrt_ps(v);
		__m256 f = _mm256_div_ps(one, _mm256_mul_ps(r, _mm256_sqrt_ps(r)));
		_mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), f));
	}
	return i;
}
#endif

static void lrn_scale(const float *s, const float *x, float *y, int n, float a, float bias) {
	int i = 0;
#if defined(__x86_64__)
	if (__builtin_cpu_supports("avx512f"))
		i = lrn_scale_avx512(s, x, y, n, a, bias);
	else if (__builtin_cpu_supports("avx"))
		i = lrn_scale_avx(s, x, y, n, a, bias);
#elif defined(__aarch64__)
	float32x4_t va = vdupq_n_f32(a), vb = vdupq_n_f32(bias), one = vdupq_n_f32(1);
	for (; i + 4 <= n; i += 4) {
		float32x4_t v = vaddq_f32(vb, vmulq_f32(va, vld1q_f32(s + i)));
		float32x4_t r = vsqrtq_f32(v);
		float32x4_t f = vdivq_f32(one, vmulq_f32(r, vsqrtq_f32(r)));
		vst1q_f32(y + i, vmulq_f32(vld1q_f32(x + i), f));
	}
#endif
	for (; i < n; i++) {
		volatile float as = a * s[i]; // no fused multiply-add: the reference rounds twice
		float r = sqrtf(bias + as);
		y[i] = x[i] * (1 / (r * sqrtf(r)));
	}
}

// LRN across channels of pixels [p0, p1) of one C×hw image (a core's share:
// the split is by pixels), as lrnForward: y = x·(bias +
// alpha/size·Σ x²)^-beta over channels [c-(size-1)/2, c+size/2], summed in
// the same order. The sums run over a block of pixels at a time so every
// loop is a vector loop.
#define LRN_BLOCK 512
LW_CLONES void lw_lrn(const float *x, float *y, int C, int hw, int p0, int p1, int size, float alpha, float beta,
                      float bias) {
	float a = alpha / (float)size, s[LRN_BLOCK];
	for (int i0 = p0; i0 < p1; i0 += LRN_BLOCK) {
		int nb = p1 - i0 < LRN_BLOCK ? p1 - i0 : LRN_BLOCK;
		for (int c = 0; c < C; c++) {
			int lo = c - (size - 1) / 2, hi = c + size / 2;
			if (lo < 0) lo = 0;
			if (hi > C - 1) hi = C - 1;
			for (int i = 0; i < nb; i++) s[i] = 0;
			for (int cc = lo; cc <= hi; cc++) {
				const float *xc = x + (size_t)cc * hw + i0;
				for (int i = 0; i < nb; i++) {
					float sq = xc[i] * xc[i];
					s[i] += sq;
				}
			}
			const float *xc = x + (size_t)c * hw + i0;
			float *yc = y + (size_t)c * hw + i0;
			if (beta == 0.75f)
				lrn_scale(s, xc, yc, nb, a, bias);
			else
				for (int i = 0; i < nb; i++) yc[i] = xc[i] * powf(bias + a * s[i], -beta);
		}
	}
}

// im2col of kernel rows [g0, g1) (channel c0+g/k, offset g%k), as
// im2colRows: each output row's in-bounds span is copied in one run and
// only the padding is zero-filled, with no test per element. With a stride
// (conv1: 4), an input row is first split by phase (element i into phase
// i % stride) and each of the k kernel offsets is then one contiguous copy
// from its phase, instead of k strided gathers over the same row.
#define IM2COL_SPLIT_MAX 4096
#define LW_IM2COL_MAXK 64
void lw_im2col_rows(const float *x, int h, int w, int c0, int k, int stride, int pad, int oh, int ow, float *col,
                    size_t ld, int g0, int g1) {
	int lo[LW_IM2COL_MAXK], hi[LW_IM2COL_MAXK]; // k ≤ LW_IM2COL_MAXK: im2colFast sends larger kernels to Go
	// ox in [lo, hi) reads inside the row: 0 ≤ ox·stride − pad + kx < w.
	for (int kx = 0; kx < k; kx++) {
		int off = kx - pad, l = 0, u;
		if (off < 0) l = (-off + stride - 1) / stride;
		u = (w - 1 - off) / stride + 1;
		if (w - 1 - off < 0) u = 0;
		if (u > ow) u = ow;
		if (l > u) l = u;
		lo[kx] = l, hi[kx] = u;
	}
	int split = stride > 1 && w <= IM2COL_SPLIT_MAX;
	int pl = (w + stride - 1) / stride; // phase q holds src[q], src[q+stride], … at phases[q·pl …]
	float phases[split ? w + stride : 1];
	for (int g = g0; g < g1; g++) {
		int c = c0 + g / k, ky = g % k;
		const float *plane = x + (size_t)c * h * w;
		float *rows = col + (size_t)g * k * ld;
		for (int oy = 0; oy < oh; oy++) {
			int iy = oy * stride - pad + ky;
			if (iy < 0 || iy >= h) {
				for (int kx = 0; kx < k; kx++) memset(rows + kx * ld + (size_t)oy * ow, 0, sizeof(float) * ow);
				continue;
			}
			const float *src = plane + (size_t)iy * w;
			if (split)
				for (int q = 0; q < stride; q++)
					for (int i = 0; q + i * stride < w; i++) phases[q * pl + i] = src[q + i * stride];
			for (int kx = 0; kx < k; kx++) {
				float *dst = rows + kx * ld + (size_t)oy * ow;
				int off = kx - pad, l = lo[kx], u = hi[kx];
				for (int ox = 0; ox < l; ox++) dst[ox] = 0;
				if (l < u) {
					// element ox reads src[ox·stride + off]
					int first = l * stride + off; // ≥ 0
					if (stride == 1)
						memcpy(dst + l, src + first, sizeof(float) * (u - l));
					else if (split)
						memcpy(dst + l, phases + (first % stride) * pl + first / stride, sizeof(float) * (u - l));
					else
						for (int ox = l; ox < u; ox++) dst[ox] = src[ox * stride + off];
				}
				for (int ox = u; ox < ow; ox++) dst[ox] = 0;
			}
		}
	}
}
