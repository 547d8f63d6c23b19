//go:build cgo && !purego

// Fully connected layers that stream their weights once per batch: fp32,
// or reduced precision (see precision.go) — bfloat16, or fp16 or int8 with
// a per-row scale — with activations and sums in fp32. For a batch of up to
// eight images every weight row is read once and multiplied into all of
// them (a GEMM with M ≤ 8 re-reads the weights per block and reached a
// quarter of the memory bandwidth a single pass does). The loops keep 16
// independent partial sums per image so compilers vectorise them without
// reordering any one sum (no -ffast-math): AVX-512 or AVX2 on amd64
// (chosen at load time), NEON on arm64. fcForwardQRef and fcForward in Go
// are the references they are tested against.

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LW_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define LW_CLONES
#endif

#define LANES 16
#define MAXNB 8

enum { LW_F32 = 0, LW_BF16 = 1, LW_I8 = 2, LW_F16 = 3 };

// Vectors of 16 lanes through GCC's vector extensions: one zmm register
// with AVX-512, two ymm with AVX2, four q registers with NEON. Plain
// arrays of partial sums were kept on the stack, not in registers.
typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));
typedef uint32_t u16x32 __attribute__((vector_size(64)));
typedef uint16_t h16 __attribute__((vector_size(32), aligned(2)));
typedef int8_t i16x8 __attribute__((vector_size(16)));
typedef int16_t h16s __attribute__((vector_size(32)));
typedef int32_t i16x32 __attribute__((vector_size(64)));

static inline v16 load_f32(const float *p) { return *(const v16u *)p; }

// Halves are widened as signed 16-bit values: one vpmovsxwd, where the
// unsigned widening was split in two; the bits shifted out or masked
// below make the sign extension irrelevant.
static inline i16x32 widen16(const uint16_t *p) {
	h16s h;
	memcpy(&h, p, sizeof h);
	return __builtin_convertvector(h, i16x32);
}

static inline v16 load_bf16(const uint16_t *p) { return (v16)(widen16(p) << 16); }

// IEEE half to float by shifting the bits into a float's place and
// rescaling the exponent with one multiply: exact for normal and
// subnormal halves (Inf and NaN never occur: rows are scaled into
// [-1, 1]), and only integer shifts and a multiply, which vectorise on
// every target. fromFP16 in Go is the same.
static inline v16 load_f16(const uint16_t *p) {
	// Sign-extended, bit 15 lands on bit 31 after the shift (through bit
	// 18 of the extension) and the mask clears bits 28–30.
	return (v16)((widen16(p) << 13) & (int32_t)0x8fffe000) * 0x1p112f;
}

// Widened in steps (8 → 16 → 32 bits): GCC 12 turned the direct 8 → 32
// conversion into scalar byte extracts, which made int8 slower than fp32.
static inline v16 load_i8(const int8_t *p) {
	i16x8 b;
	memcpy(&b, p, sizeof b);
	return __builtin_convertvector(__builtin_convertvector(__builtin_convertvector(b, h16s), i16x32), v16);
}

static inline float f32of(float v) { return v; }

static inline float bf16f(uint16_t h) {
	uint32_t u = (uint32_t)h << 16;
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static inline float f16f(uint16_t h) {
	uint32_t u = ((uint32_t)(h & 0x8000) << 16) | ((uint32_t)(h & 0x7fff) << 13);
	float f;
	memcpy(&f, &u, 4);
	return f * 0x1p112f;
}

#define AS_F32(v) ((float)(v))

static inline float hsum(v16 a) {
	float s = 0;
	for (int l = 0; l < LANES; l++) s += a[l];
	return s;
}

// R weight rows against NB images (both constants, so the partial sums
// stay in registers): each row is read once per group of images, and each
// load of an image's activations serves R rows. out[r*NB+b] gets row r,
// image b; rows are in elements (not bytes) apart.
#define ROW_KERNEL(NAME, WT, LOAD, CONV, NB, R)                                                   \
	LW_CLONES static void NAME##_##NB##x##R(const WT *w, size_t rs, const float *x, size_t in,    \
	                                       float *out) {                                          \
		v16 acc[R][NB];                                                                           \
		_Pragma("GCC unroll 4") for (int r = 0; r < R; r++)                                      \
		    _Pragma("GCC unroll 8") for (int b = 0; b < NB; b++) acc[r][b] = (v16){0};            \
		size_t i = 0, end = in / LANES * LANES;                                                   \
		for (; i < end; i += LANES) {                                                             \
			v16 v[R];                                                                             \
			_Pragma("GCC unroll 4") for (int r = 0; r < R; r++) v[r] = LOAD(w + r * rs + i);      \
			_Pragma("GCC unroll 8") for (int b = 0; b < NB; b++) {                                \
				v16 xv = load_f32(x + b * in + i);                                                \
				_Pragma("GCC unroll 4") for (int r = 0; r < R; r++) acc[r][b] += v[r] * xv;       \
			}                                                                                     \
		}                                                                                         \
		for (int r = 0; r < R; r++) {                                                             \
			for (int b = 0; b < NB; b++) out[r * NB + b] = hsum(acc[r][b]);                       \
			for (size_t k = i; k < in; k++) {                                                     \
				float v = CONV(w[r * rs + k]);                                                    \
				for (int b = 0; b < NB; b++) out[r * NB + b] += v * x[b * in + k];                \
			}                                                                                     \
		}                                                                                         \
	}

// Row blocks per group size: R·NB ≤ 16 partial sums (of AVX-512's 32
// registers), and R = 1 for the last rows of a range.
#define ROW_KERNELS(NAME, WT, LOAD, CONV)                                                           \
	ROW_KERNEL(NAME, WT, LOAD, CONV, 1, 4)                                                          \
	ROW_KERNEL(NAME, WT, LOAD, CONV, 2, 4)                                                          \
	ROW_KERNEL(NAME, WT, LOAD, CONV, 4, 4)                                                          \
	ROW_KERNEL(NAME, WT, LOAD, CONV, 8, 2)                                                          \
	ROW_KERNEL(NAME, WT, LOAD, CONV, 1, 1)                                                          \
	ROW_KERNEL(NAME, WT, LOAD, CONV, 2, 1)                                                          \
	ROW_KERNEL(NAME, WT, LOAD, CONV, 4, 1)                                                          \
	ROW_KERNEL(NAME, WT, LOAD, CONV, 8, 1)                                                          \
	/* rows [0, rows) of w (in elements per row) against nb images into out[row*nb+b] */         \
	static void NAME(const WT *w, int rows, const float *x, size_t in, int nb, float *out) {        \
		int R = nb == 8 ? 2 : 4, o = 0;                                                             \
		for (; o + R <= rows; o += R) {                                                             \
			const WT *wo = w + (size_t)o * in;                                                      \
			float *so = out + o * nb;                                                               \
			switch (nb) {                                                                           \
			case 8: NAME##_8x2(wo, in, x, in, so); break;                                           \
			case 4: NAME##_4x4(wo, in, x, in, so); break;                                           \
			case 2: NAME##_2x4(wo, in, x, in, so); break;                                           \
			case 1: NAME##_1x4(wo, in, x, in, so); break;                                           \
			}                                                                                       \
		}                                                                                           \
		for (; o < rows; o++) {                                                                     \
			const WT *wo = w + (size_t)o * in;                                                      \
			float *so = out + o * nb;                                                               \
			switch (nb) {                                                                           \
			case 8: NAME##_8x1(wo, in, x, in, so); break;                                           \
			case 4: NAME##_4x1(wo, in, x, in, so); break;                                           \
			case 2: NAME##_2x1(wo, in, x, in, so); break;                                           \
			case 1: NAME##_1x1(wo, in, x, in, so); break;                                           \
			}                                                                                       \
		}                                                                                           \
	}

ROW_KERNELS(rows_f32, float, load_f32, f32of)
ROW_KERNELS(rows_bf16, uint16_t, load_bf16, bf16f)
ROW_KERNELS(rows_f16, uint16_t, load_f16, f16f)
ROW_KERNELS(rows_i8, int8_t, load_i8, AS_F32)

// Groups of 8, 4, 2, 1 images: n = 3 runs 2 + 1, never a padded group.
static int group(int left) { return left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1; }

// y[b*out+o] = bias[o] + scale[o]·Σ_i w[o*in+i]·x[b*in+i] for o in [o0, o1);
// scale is used for fp16 and int8. Rows go in blocks of ROWBLOCK so the
// sums of a block (ROWBLOCK × 8 floats) stay on the stack.
#define ROWBLOCK 64
void lw_fc(const void *w, int kind, const float *scale, const float *x, const float *bias, float *y,
           int n, int in, int out, int o0, int o1) {
	float s[ROWBLOCK * MAXNB];
	for (int b = 0; b < n;) {
		int nb = group(n - b);
		const float *xb = x + (size_t)b * in;
		for (int o = o0; o < o1; o += ROWBLOCK) {
			int rows = o1 - o < ROWBLOCK ? o1 - o : ROWBLOCK;
			size_t at = (size_t)o * in;
			switch (kind) {
			case LW_F32: rows_f32((const float *)w + at, rows, xb, in, nb, s); break;
			case LW_BF16: rows_bf16((const uint16_t *)w + at, rows, xb, in, nb, s); break;
			case LW_F16: rows_f16((const uint16_t *)w + at, rows, xb, in, nb, s); break;
			case LW_I8: rows_i8((const int8_t *)w + at, rows, xb, in, nb, s); break;
			}
			for (int r = 0; r < rows; r++) {
				float sc = kind == LW_F16 || kind == LW_I8 ? scale[o + r] : 1;
				for (int k = 0; k < nb; k++) {
					float v = s[r * nb + k];
					y[(size_t)(b + k) * out + o + r] = bias[o + r] + (sc == 1 ? v : v * sc);
				}
			}
		}
		b += nb;
	}
}
