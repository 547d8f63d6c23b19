//go:build cgo && !purego && !amd64 && !arm64

// The streaming FC kernels elsewhere (fc.h): the compiler's generic
// 4-lane vectors.

#include "fc.h"

// Four lanes of the compiler's generic vectors.
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
