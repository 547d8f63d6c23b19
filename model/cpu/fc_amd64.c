//go:build cgo && !purego

// The streaming FC kernels on x86-64 (fc.h): AVX-512, AVX2+FMA+F16C and
// SSE2 families, chosen per call by what the CPU supports.

#include "fc.h"

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

// SSE2 (x86's baseline: 16 registers) or any other vector unit: 4 lanes.
#define W4_L 4
#define W4_ATTR
#define W4_R1_F32 4
#define W4_R1_HALF 4
#define W4_R1_I8 4
#define W4_R2 4
#define W4_R4 2
#define W4_R8 1
FC_TYPES(W4)
FC_LOADERS(W4)
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
