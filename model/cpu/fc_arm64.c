//go:build cgo && !purego

// The streaming FC kernels on arm64 (fc.h): one NEON family.

#include <arm_neon.h>

#include "fc.h"

// NEON: 32 registers of 4 lanes.
#define W4_L 4
#define W4_ATTR
#define W4_R1_F32 4
#define W4_R1_HALF 4
#define W4_R1_I8 4
#define W4_R2 4
#define W4_R4 4
#define W4_R8 3
FC_TYPES(W4)
// NEON's own widenings: GCC assembled the generic 4-lane ones lane by lane.
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
FC_FAMILY(W4)

void lw_fc(const void *w, int kind, const float *scale, const float *x, const float *bias, float *y, int n, int in,
           int out, int o0, int o1) {
	W4_fc(w, kind, scale, x, bias, y, n, in, out, o0, o1);
}

// lw_fc_width runs one family by its lane count, for the tests that check
// every family this CPU can run against the reference; it returns 0 when
// this build has no such family.
int lw_fc_width(int lanes, const void *w, int kind, const float *scale, const float *x, const float *bias, float *y,
                int n, int in, int out, int o0, int o1) {
	if (lanes != 4) return 0;
	W4_fc(w, kind, scale, x, bias, y, n, in, out, o0, o1);
	return 1;
}
