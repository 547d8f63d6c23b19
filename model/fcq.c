//go:build cgo && !purego

// Reduced-precision fully connected layers (see precision.go): weights in
// bfloat16 or int8 (per-row scale), activations and sums in fp32. The
// loops keep 16 independent partial sums per image so compilers vectorise
// them without reordering any one sum (no -ffast-math): AVX-512 or AVX2 on
// amd64 (chosen at load time), NEON on arm64. fcForwardQRef in Go is the
// reference they are tested against.

#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LW_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define LW_CLONES
#endif

#define LANES 16

static inline float bf16f(uint16_t h) {
	union {
		uint32_t u;
		float f;
	} v;
	v.u = (uint32_t)h << 16;
	return v.f;
}

static inline float hsum(const float *a) {
	float s = 0;
	for (int l = 0; l < LANES; l++) s += a[l];
	return s;
}

// One weight row against up to four images: the row is read once.
#define ROW_KERNEL(NAME, WT, CONV)                                                          \
	LW_CLONES static void NAME(const WT *r, const float *x, size_t in, int nb, float *out) { \
		float a0[LANES] = {0}, a1[LANES] = {0}, a2[LANES] = {0}, a3[LANES] = {0};             \
		size_t i = 0, end = in / LANES * LANES;                                              \
		if (nb == 1) {                                                                       \
			for (; i < end; i += LANES)                                                      \
				for (int l = 0; l < LANES; l++) a0[l] += CONV(r[i + l]) * x[i + l];          \
		} else {                                                                             \
			const float *x1 = x + in, *x2 = x + (nb > 2 ? 2 * in : in),                      \
			            *x3 = x + (nb > 3 ? 3 * in : in);                                    \
			for (; i < end; i += LANES)                                                      \
				for (int l = 0; l < LANES; l++) {                                            \
					float v = CONV(r[i + l]);                                                \
					a0[l] += v * x[i + l];                                                   \
					a1[l] += v * x1[i + l];                                                  \
					a2[l] += v * x2[i + l];                                                  \
					a3[l] += v * x3[i + l];                                                  \
				}                                                                            \
		}                                                                                    \
		float s[4] = {hsum(a0), hsum(a1), hsum(a2), hsum(a3)};                               \
		for (; i < in; i++) {                                                                \
			float v = CONV(r[i]);                                                            \
			for (int b = 0; b < nb; b++) s[b] += v * x[b * in + i];                          \
		}                                                                                    \
		for (int b = 0; b < nb; b++) out[b] = s[b];                                          \
	}

#define AS_F32(v) ((float)(v))
ROW_KERNEL(row_bf16, uint16_t, bf16f)
ROW_KERNEL(row_i8, int8_t, AS_F32)

// y[b*out+o] = bias[o] + scale[o]·Σ_i w[o*in+i]·x[b*in+i] for o in [o0, o1).
// scale is NULL for bf16.
void lw_fc_q(const void *w, int is_i8, const float *scale, const float *x, const float *bias, float *y,
             int n, int in, int out, int o0, int o1) {
	float s[4];
	for (int b = 0; b < n; b += 4) {
		int nb = n - b < 4 ? n - b : 4;
		const float *xb = x + (size_t)b * in;
		for (int o = o0; o < o1; o++) {
			if (is_i8) {
				row_i8((const int8_t *)w + (size_t)o * in, xb, in, nb, s);
				for (int k = 0; k < nb; k++) s[k] *= scale[o];
			} else {
				row_bf16((const uint16_t *)w + (size_t)o * in, xb, in, nb, s);
			}
			for (int k = 0; k < nb; k++) y[(size_t)(b + k) * out + o] = bias[o] + s[k];
		}
	}
}
