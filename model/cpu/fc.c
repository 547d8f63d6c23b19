//go:build cgo && !purego

// Fully connected layers that stream their weights once per batch: fp32,
// or reduced precision (see precision.go) — bfloat16, or fp16 or int8 with
// a per-row scale — with activations and sums in fp32. For a batch of up to
// eight images every weight row is read once and multiplied into all of
// them (a GEMM with M ≤ 8 re-reads the weights per block and reached a
// quarter of the memory bandwidth a single pass does). Each image keeps
// one vector of independent partial sums per row, so the compiler
// vectorises without reordering any one sum (no -ffast-math).
// fcForwardQRef and fcForward in Go are the references they are tested
// against.
//
// The kernels are written once (FC_FAMILY) and instantiated per vector
// width, each with its own register blocking — R rows × NB images of
// partial sums must fit the register file, or the compiler spills them to
// the stack on every step: 16 lanes for AVX-512 (32 zmm), 8 for AVX2 (16
// ymm), 4 for SSE2 (16 xmm) and NEON (32 q). x86 picks one at load time.

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MAXNB 8

enum { LW_F32 = 0, LW_BF16 = 1, LW_I8 = 2, LW_F16 = 3 };

static inline float f32of(float v) { return v; }

static inline float bf16f(uint16_t h) {
	uint32_t u = (uint32_t)h << 16;
	float f;
	memcpy(&f, &u, 4);
	return f;
}

// IEEE half to float by moving the bits into a float's place and rebasing
// the exponent with one multiply: exact for normal and subnormal halves
// (Inf and NaN never occur: rows are scaled into [-1, 1]); only shifts, a
// mask and a multiply, which vectorise everywhere. fromFP16 in Go is the
// same.
static inline float f16f(uint16_t h) {
	uint32_t u = ((uint32_t)(h & 0x8000) << 16) | ((uint32_t)(h & 0x7fff) << 13);
	float f;
	memcpy(&f, &u, 4);
	return f * 0x1p112f;
}

#define AS_F32(v) ((float)(v))

// One R-row × NB-image block of family P (both constants, so the partial
// sums are registers): out[r*NB+b] = Σ_i w[r*rs+i]·x[b*in+i].
// Kept out of line: each block gets its registers to itself, and its inner
// loop can be checked for stack spills in a disassembly.
#define ROW_KERNEL(P, NAME, WT, LOAD, CONV, NB, R, TAG)                                               \
	P##_ATTR __attribute__((noinline)) static void P##_##NAME##_##NB##x##TAG(const WT *w, size_t rs, const float *x, size_t in, \
	                                             float *out) {                                     \
		P##_v acc[R][NB];                                                                          \
		_Pragma("GCC unroll 16") for (int r = 0; r < R; r++)                                       \
		    _Pragma("GCC unroll 8") for (int b = 0; b < NB; b++) acc[r][b] = (P##_v){0};           \
		size_t i = 0, end = in / P##_L * P##_L;                                                    \
		for (; i < end; i += P##_L) {                                                              \
			P##_v v[R];                                                                            \
			_Pragma("GCC unroll 16") for (int r = 0; r < R; r++) v[r] = P##_##LOAD(w + r * rs + i); \
			_Pragma("GCC unroll 8") for (int b = 0; b < NB; b++) {                                 \
				P##_v xv = P##_load_f32(x + b * in + i);                                           \
				_Pragma("GCC unroll 16") for (int r = 0; r < R; r++) acc[r][b] += v[r] * xv;        \
			}                                                                                      \
		}                                                                                          \
		for (int r = 0; r < R; r++) {                                                              \
			for (int b = 0; b < NB; b++) {                                                         \
				float s = 0;                                                                       \
				for (int l = 0; l < P##_L; l++) s += acc[r][b][l];                                 \
				out[r * NB + b] = s;                                                               \
			}                                                                                      \
			for (size_t k = i; k < in; k++) {                                                      \
				float v = CONV(w[r * rs + k]);                                                     \
				for (int b = 0; b < NB; b++) out[r * NB + b] += v * x[b * in + k];                 \
			}                                                                                      \
		}                                                                                          \
	}

// rows [0, rows) of w against nb images into out[row*nb+b]: blocks of
// P##_R<nb> rows (R1 for one image, per weight type), then single rows.
#define ROW_KERNELS(P, NAME, WT, LOAD, CONV, R1)                                               \
	ROW_KERNEL(P, NAME, WT, LOAD, CONV, 1, R1, blk)                                                 \
	ROW_KERNEL(P, NAME, WT, LOAD, CONV, 2, P##_R2, blk)                                             \
	ROW_KERNEL(P, NAME, WT, LOAD, CONV, 4, P##_R4, blk)                                             \
	ROW_KERNEL(P, NAME, WT, LOAD, CONV, 8, P##_R8, blk)                                             \
	ROW_KERNEL(P, NAME, WT, LOAD, CONV, 1, 1, 1)                                                  \
	ROW_KERNEL(P, NAME, WT, LOAD, CONV, 2, 1, 1)                                                  \
	ROW_KERNEL(P, NAME, WT, LOAD, CONV, 4, 1, 1)                                                  \
	ROW_KERNEL(P, NAME, WT, LOAD, CONV, 8, 1, 1)                                                  \
	P##_ATTR static void P##_##NAME(const WT *w, int rows, const float *x, size_t in, int nb,   \
	                                float *out) {                                              \
		int R = nb == 8 ? P##_R8 : nb == 4 ? P##_R4 : nb == 2 ? P##_R2 : R1, o = 0;           \
		for (; o + R <= rows; o += R) {                                                        \
			const WT *wo = w + (size_t)o * in;                                                 \
			float *so = out + o * nb;                                                          \
			switch (nb) {                                                                      \
			case 8: P##_##NAME##_8xblk(wo, in, x, in, so); break;                         \
			case 4: P##_##NAME##_4xblk(wo, in, x, in, so); break;                         \
			case 2: P##_##NAME##_2xblk(wo, in, x, in, so); break;                         \
			case 1: P##_##NAME##_1xblk(wo, in, x, in, so); break;                             \
			}                                                                                  \
		}                                                                                      \
		for (; o < rows; o++) {                                                                \
			const WT *wo = w + (size_t)o * in;                                                 \
			float *so = out + o * nb;                                                          \
			switch (nb) {                                                                      \
			case 8: P##_##NAME##_8x1(wo, in, x, in, so); break;                                \
			case 4: P##_##NAME##_4x1(wo, in, x, in, so); break;                                \
			case 2: P##_##NAME##_2x1(wo, in, x, in, so); break;                                \
			case 1: P##_##NAME##_1x1(wo, in, x, in, so); break;                                \
			}                                                                                  \
		}                                                                                      \
	}

// The vector types and loads of family P with P##_L lanes. Halves and
// bytes are widened as signed values in steps (8 → 16 → 32 bits): GCC 12
// split unsigned and direct 8 → 32 widenings into scalar extracts. The
// sign extension is shifted out (bf16) or masked (fp16: after the shift
// bit 15 lands on bit 31 through bit 18 of the extension, and the mask
// clears bits 28–30).
#define FC_TYPES(P)                                                                               \
	typedef float P##_v __attribute__((vector_size(4 * P##_L)));                                 \
	typedef float P##_vu __attribute__((vector_size(4 * P##_L), aligned(4)));                    \
	typedef int32_t P##_vi __attribute__((vector_size(4 * P##_L)));                              \
	typedef int16_t P##_vh __attribute__((vector_size(2 * P##_L)));                              \
	typedef int8_t P##_vb __attribute__((vector_size(P##_L)));                                   \
	P##_ATTR static inline P##_v P##_load_f32(const float *p) { return *(const P##_vu *)p; }

#define FC_LOADERS(P)                                                                             \
	P##_ATTR static inline P##_vi P##_widen16(const uint16_t *p) {                               \
		P##_vh h;                                                                                \
		memcpy(&h, p, sizeof h);                                                                 \
		return __builtin_convertvector(h, P##_vi);                                               \
	}                                                                                            \
	P##_ATTR static inline P##_v P##_load_bf16(const uint16_t *p) {                              \
		return (P##_v)(P##_widen16(p) << 16);                                                    \
	}                                                                                            \
	P##_ATTR static inline P##_v P##_load_f16(const uint16_t *p) {                               \
		return (P##_v)((P##_widen16(p) << 13) & (int32_t)0x8fffe000) * 0x1p112f;                 \
	}                                                                                            \
	P##_ATTR static inline P##_v P##_load_i8(const int8_t *p) {                                  \
		P##_vb b;                                                                                \
		memcpy(&b, p, sizeof b);                                                                 \
		return __builtin_convertvector(__builtin_convertvector(__builtin_convertvector(b, P##_vh), \
		                                                       P##_vi),                          \
		                               P##_v);                                                   \
	}

// Groups of 8, 4, 2, 1 images: n = 3 runs 2 + 1, never a padded group.
static int group(int left) { return left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1; }

// y[b*out+o] = bias[o] + scale[o]·Σ_i w[o*in+i]·x[b*in+i] for o in [o0, o1)
// (scale for fp16 and int8), rows in blocks of ROWBLOCK (a multiple of
// every family's row blocking) so a block's sums (ROWBLOCK × 8 floats) stay
// on the stack. Each row block serves every group of images before the
// next: a batch of 16 (the daemon's merged cameras) then reads the weights
// from memory once, the second group finding the block (1.7 MB in fp32) in
// the cache, where image groups outside row blocks read them twice.
#define ROWBLOCK 48
#define FC_FAMILY(P)                                                                                \
	ROW_KERNELS(P, rows_f32, float, load_f32, f32of, P##_R1_F32)                                    \
	ROW_KERNELS(P, rows_bf16, uint16_t, load_bf16, bf16f, P##_R1_HALF)                              \
	ROW_KERNELS(P, rows_f16, uint16_t, load_f16, f16f, P##_R1_HALF)                                 \
	ROW_KERNELS(P, rows_i8, int8_t, load_i8, AS_F32, P##_R1_I8)                                     \
	P##_ATTR static void P##_fc(const void *w, int kind, const float *scale, const float *x,         \
	                            const float *bias, float *y, int n, int in, int out, int o0, int o1) { \
		float s[ROWBLOCK * MAXNB];                                                                  \
		for (int o = o0; o < o1; o += ROWBLOCK) {                                                   \
			int rows = o1 - o < ROWBLOCK ? o1 - o : ROWBLOCK;                                       \
			size_t at = (size_t)o * in;                                                             \
			for (int b = 0; b < n;) {                                                               \
				int nb = group(n - b);                                                              \
				const float *xb = x + (size_t)b * in;                                               \
				switch (kind) {                                                                     \
				case LW_F32: P##_rows_f32((const float *)w + at, rows, xb, in, nb, s); break;       \
				case LW_BF16: P##_rows_bf16((const uint16_t *)w + at, rows, xb, in, nb, s); break;  \
				case LW_F16: P##_rows_f16((const uint16_t *)w + at, rows, xb, in, nb, s); break;    \
				case LW_I8: P##_rows_i8((const int8_t *)w + at, rows, xb, in, nb, s); break;        \
				}                                                                                   \
				for (int r = 0; r < rows; r++) {                                                    \
					float sc = kind == LW_F16 || kind == LW_I8 ? scale[o + r] : 1;                  \
					for (int k = 0; k < nb; k++) {                                                  \
						float v = s[r * nb + k];                                                    \
						y[(size_t)(b + k) * out + o + r] = bias[o + r] + (sc == 1 ? v : v * sc);    \
					}                                                                               \
				}                                                                                   \
				b += nb;                                                                            \
			}                                                                                       \
		}                                                                                           \
	}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// AVX-512: 32 registers of 16 lanes. Eight images take four rows at a
// time (32 sums, a few spilled): each load of an image's values then
// serves four rows, and more rows stream at once. fc6 at batch 8 went from
// 1.11 to 0.97 ms/image (fp16 0.75 → 0.56) with three rows over two; four
// over three, two threads on 9216 × 4096: fp32 7.36 → 6.21 ms, fp16 4.75 →
// 4.46 ms per batch. One image takes eight rows of halves or bytes at a
// time (fp32 stays at four: eight measured the same): more rows stream at
// once, and with the one-instruction widenings below fc6 at batch 1 (two
// threads) went fp16 3.00 → 2.50–2.61 ms, bf16 2.89–2.99 → 2.46–2.58,
// int8 2.09 → 1.46–1.54 (int8 −20% at batches 2–8 too).
#include <immintrin.h>
#define W16_L 16
#define W16_ATTR __attribute__((target("avx512f")))
#define W16_R1_F32 4
#define W16_R1_HALF 8
#define W16_R1_I8 8
#define W16_R2 4
#define W16_R4 4
#define W16_R8 4
FC_TYPES(W16)
// AVX-512F's own widenings, one instruction each (vcvtph2ps, vpmovzxwd,
// vpmovsxbd): GCC 12 assembled the generic ones from 256-bit halves.
W16_ATTR static inline W16_v W16_load_f16(const uint16_t *p) {
	return (W16_v)_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}
W16_ATTR static inline W16_v W16_load_bf16(const uint16_t *p) {
	return (W16_v)_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16);
}
W16_ATTR static inline W16_v W16_load_i8(const int8_t *p) {
	return (W16_v)_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}
FC_FAMILY(W16)
// AVX2 + FMA + F16C (every AVX2 core has F16C): 16 registers of 8 lanes.
// The same one-instruction widenings and eight rows for one image as
// AVX-512 (run here through lw_fc_width): fc6 at batch 1, two threads,
// fp16 3.33 → 2.51 ms, bf16 3.15 → 2.62, int8 2.96 → 1.53; batch 8 the
// same or up to 4% faster.
#define W8_L 8
#define W8_ATTR __attribute__((target("avx2,fma,f16c")))
#define W8_R1_F32 4
#define W8_R1_HALF 8
#define W8_R1_I8 8
#define W8_R2 4
#define W8_R4 2
#define W8_R8 1
FC_TYPES(W8)
W8_ATTR static inline W8_v W8_load_f16(const uint16_t *p) {
	return (W8_v)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}
W8_ATTR static inline W8_v W8_load_bf16(const uint16_t *p) {
	return (W8_v)_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16);
}
W8_ATTR static inline W8_v W8_load_i8(const int8_t *p) {
	return (W8_v)_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}
FC_FAMILY(W8)
#endif

// SSE2 (x86's baseline: 16 registers) or NEON (32) or anything else: 4
// lanes.
#define W4_L 4
#define W4_ATTR
#define W4_R1_F32 4
#define W4_R1_HALF 4
#define W4_R1_I8 4
#if defined(__aarch64__)
#define W4_R2 4
#define W4_R4 4
#define W4_R8 3
#else
#define W4_R2 4
#define W4_R4 2
#define W4_R8 1
#endif
FC_TYPES(W4)
#if defined(__aarch64__)
// NEON's own widenings: GCC assembled the generic 4-lane ones lane by lane.
#include <arm_neon.h>
static inline W4_v W4_load_bf16(const uint16_t *p) { return (W4_v)vshll_n_u16(vld1_u16(p), 16); }
// Halves convert in one FCVTL (base AArch64, exact for every half) where
// the generic form took a widening, a shift, a mask and a multiply: 17
// instructions per step of four rows instead of 29. Written as asm because
// GCC 12, given the vcvt_f32_f16 intrinsic, stored every accumulator to the
// stack on every step.
static inline W4_v W4_load_f16(const uint16_t *p) {
	float32x4_t f;
	__asm__("fcvtl %0.4s, %1.4h" : "=w"(f) : "w"(vld1_u16(p)));
	return (W4_v)f;
}
static inline W4_v W4_load_i8(const int8_t *p) {
	int32_t four;
	memcpy(&four, p, 4);
	int8x8_t b = vreinterpret_s8_s32(vdup_n_s32(four));
	return (W4_v)vcvtq_f32_s32(vmovl_s16(vget_low_s16(vmovl_s8(b))));
}
#else
FC_LOADERS(W4)
#endif
FC_FAMILY(W4)

void lw_fc(const void *w, int kind, const float *scale, const float *x, const float *bias, float *y, int n, int in,
           int out, int o0, int o1) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
	if (__builtin_cpu_supports("avx512f")) {
		W16_fc(w, kind, scale, x, bias, y, n, in, out, o0, o1);
		return;
	}
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
		W8_fc(w, kind, scale, x, bias, y, n, in, out, o0, o1);
		return;
	}
#endif
	W4_fc(w, kind, scale, x, bias, y, n, in, out, o0, o1);
}

// lw_fc_width runs one family by its lane count (16, 8, 4), for the tests
// that check every family this CPU can run against the reference; it
// returns 0 when this CPU or build has no such family.
int lw_fc_width(int lanes, const void *w, int kind, const float *scale, const float *x, const float *bias, float *y,
                int n, int in, int out, int o0, int o1) {
	switch (lanes) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
	case 16:
		if (!__builtin_cpu_supports("avx512f")) return 0;
		W16_fc(w, kind, scale, x, bias, y, n, in, out, o0, o1);
		return 1;
	case 8:
		if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") || !__builtin_cpu_supports("f16c")) return 0;
		W8_fc(w, kind, scale, x, bias, y, n, in, out, o0, o1);
		return 1;
#endif
	case 4:
		W4_fc(w, kind, scale, x, bias, y, n, in, out, o0, o1);
		return 1;
	}
	return 0;
}
