#ifndef LW_FC_H
#define LW_FC_H

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
// ymm), 4 for SSE2 (16 xmm) and NEON (32 q). Each architecture's file
// (fc_amd64.c, fc_arm64.c, fc_generic.c) instantiates its families and
// defines lw_fc and lw_fc_width; x86 picks its family at run time.

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

#endif
