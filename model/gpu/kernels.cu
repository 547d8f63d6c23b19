// Leafwatch CUDA kernels, compiled at start with NVRTC. Every parameter is
// 8 bytes wide (pointers, long long, double) because gorgonia.org/cu's
// Launch copies each argument as a 64-bit word.
extern "C" {

#define LOOP(i, n) for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); i += (long long)blockDim.x * gridDim.x)

// col[(c*k*k + ky*k + kx) * oh*ow + oy*ow + ox] = x[c0 + c][oy*s - pad + ky][ox*s - pad + kx]:
// entry i of the im2col matrix.
__device__ static float im2col_at(const float* x, long long h, long long w, long long c0, long long k,
                                  long long stride, long long pad, long long ow, long long p, long long i) {
    long long q = i % p, row = i / p;
    long long kx = row % k, ky = (row / k) % k, c = c0 + row / (k * k);
    long long iy = (q / ow) * stride - pad + ky, ix = (q % ow) * stride - pad + kx;
    return (iy >= 0 && iy < h && ix >= 0 && ix < w) ? x[(c * h + iy) * w + ix] : 0.0f;
}

__global__ void im2col(const float* x, long long h, long long w, long long c0, long long cin, long long k,
                       long long stride, long long pad, long long oh, long long ow, float* col) {
    long long p = oh * ow;
    LOOP(i, cin * k * k * p) { col[i] = im2col_at(x, h, w, c0, k, stride, pad, ow, p, i); }
}

// ---- half precision (precision: fp16) ----
// Halves are unsigned short bit patterns converted here with integer
// arithmetic, so the NVRTC build (any architecture) and the host harness
// run the same code and need no cuda_fp16.h.

// f2h rounds to the nearest IEEE half, ties to even, as internal/half's
// FromFloat32 does, except that magnitudes past fp16's largest finite
// value (65504) saturate to ±65504 instead of becoming ±Inf: an activation
// that large is already meaningless, an Inf would turn the GEMM's sums
// into NaN. NaN stays NaN.
__device__ static unsigned short f2h(float v) {
    union { float f; unsigned int u; } c;
    c.f = v;
    unsigned short sign = (unsigned short)((c.u >> 16) & 0x8000u);
    unsigned int a = c.u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00u;      // NaN
    if (a >= 0x477ff000u) return sign | 0x7bffu;     // rounds past 65504 (Inf included)
    if (a < 0x38800000u) {                           // below 2^-14: a subnormal half
        unsigned int e = a >> 23;
        if (e < 102u) return sign;                   // below 2^-25: rounds to zero
        unsigned int mant = (a & 0x7fffffu) | 0x800000u, shift = 126u - e;
        unsigned int q = mant >> shift, rem = mant & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
        if (rem > halfway || (rem == halfway && (q & 1u))) q++;
        return sign | (unsigned short)q;
    }
    a += 0xfffu + ((a >> 13) & 1u);
    return sign | (unsigned short)((a - 0x38000000u) >> 13);
}

// im2col into halves: the B operand of a convolution's fp16 GEMM.
__global__ void im2col_h(const float* x, long long h, long long w, long long c0, long long cin, long long k,
                         long long stride, long long pad, long long oh, long long ow, unsigned short* col) {
    long long p = oh * ow;
    LOOP(i, cin * k * k * p) { col[i] = f2h(im2col_at(x, h, w, c0, k, stride, pad, ow, p, i)); }
}

// y[i] = half(x[i]): a fully connected layer's input for its fp16 GEMM.
__global__ void to_half(const float* x, unsigned short* y, long long n) {
    LOOP(i, n) { y[i] = f2h(x[i]); }
}

// y[r][c] = s[r]·y[r][c] + b[r]: a convolution's output planes after the
// fp16 GEMM of its row-scaled weights (w ≈ s[r]·half).
__global__ void scale_bias_rows(float* y, const float* s, const float* b, long long rows, long long cols) {
    LOOP(i, rows * cols) { long long r = i / cols; y[i] = s[r] * y[i] + b[r]; }
}

// y[i][o] = s[o]·y[i][o] + b[o]: a fully connected layer's n outputs after
// its fp16 GEMM.
__global__ void scale_bias_cols(float* y, const float* s, const float* b, long long n, long long out) {
    LOOP(i, n * out) { long long o = i % out; y[i] = s[o] * y[i] + b[o]; }
}

// y[r][c] = b[r] for a rows×cols block (conv output planes).
__global__ void fill_rows(float* y, const float* b, long long rows, long long cols) {
    LOOP(i, rows * cols) { y[i] = b[i / cols]; }
}

// y[i][o] = b[o] for n rows of out values (fully connected outputs).
__global__ void fill_cols(float* y, const float* b, long long n, long long out) {
    LOOP(i, n * out) { y[i] = b[i % out]; }
}

__global__ void relu(float* x, long long n) {
    LOOP(i, n) { x[i] = fmaxf(x[i], 0.0f); }
}

__global__ void maxpool(const float* x, float* y, long long c, long long h, long long w, long long oh,
                        long long ow, long long k, long long s, long long pad) {
    LOOP(i, c * oh * ow) {
        long long ox = i % ow, oy = (i / ow) % oh, ch = i / (oh * ow);
        long long y0 = oy * s - pad, x0 = ox * s - pad;
        long long y1 = min(y0 + k, h), x1 = min(x0 + k, w);
        y0 = max(y0, 0LL); x0 = max(x0, 0LL);
        float best = -3.402823466e38f;
        for (long long yy = y0; yy < y1; yy++)
            for (long long xx = x0; xx < x1; xx++)
                best = fmaxf(best, x[(ch * h + yy) * w + xx]);
        y[i] = best;
    }
}

// Across-channel LRN as ONNX defines it.
__global__ void lrn(const float* x, float* y, long long c, long long hw, long long size, double alpha,
                    double beta, double bias) {
    LOOP(i, c * hw) {
        long long ch = i / hw, p = i % hw;
        long long lo = max(ch - (size - 1) / 2, 0LL), hi = min(ch + size / 2, c - 1);
        float s = 0.0f;
        for (long long cc = lo; cc <= hi; cc++) { float v = x[cc * hw + p]; s += v * v; }
        y[i] = x[i] * powf((float)bias + (float)(alpha / size) * s, -(float)beta);
    }
}

// Row-wise softmax, one thread per image.
__global__ void softmax(float* z, long long n, long long classes) {
    LOOP(r, n) {
        float* row = z + r * classes;
        float m = row[0];
        for (long long j = 1; j < classes; j++) m = fmaxf(m, row[j]);
        double s = 0.0;
        for (long long j = 0; j < classes; j++) { float e = expf(row[j] - m); row[j] = e; s += e; }
        for (long long j = 0; j < classes; j++) row[j] = (float)(row[j] / s);
    }
}

}

// ---- training ----
extern "C" {

__global__ void mul(float* x, const float* m, long long n) {
    LOOP(i, n) { x[i] *= m[i]; }
}

__global__ void relu_bwd(const float* y, float* dy, long long n) {
    LOOP(i, n) { if (y[i] <= 0.0f) dy[i] = 0.0f; }
}

// Max-pool that records the winning input index of each output.
__global__ void maxpool_train(const float* x, float* y, int* arg, long long c, long long h, long long w,
                              long long oh, long long ow, long long k, long long s, long long pad) {
    LOOP(i, c * oh * ow) {
        long long ox = i % ow, oy = (i / ow) % oh, ch = i / (oh * ow);
        long long y0 = oy * s - pad, x0 = ox * s - pad;
        long long y1 = min(y0 + k, h), x1 = min(x0 + k, w);
        y0 = max(y0, 0LL); x0 = max(x0, 0LL);
        float best = -3.402823466e38f; long long bi = -1;
        for (long long yy = y0; yy < y1; yy++)
            for (long long xx = x0; xx < x1; xx++) {
                long long j = (ch * h + yy) * w + xx;
                if (bi < 0 || x[j] > best) { best = x[j]; bi = j; }
            }
        y[i] = best; arg[i] = (int)bi;
    }
}

// Adjoint of max-pool, gathering: each input element sums the gradients of
// the windows that picked it, in output order (the CPU engine's order). No
// atomics, so every run gives the same bytes. One thread per input element;
// dx needs no clearing.
__global__ void maxpool_bwd(const float* dy, const int* arg, float* dx, long long c, long long h, long long w,
                            long long oh, long long ow, long long k, long long s, long long pad) {
    LOOP(i, c * h * w) {
        long long ix = i % w, iy = (i / w) % h, ch = i / (h * w);
        // Output o covers inputs [o*s - pad, o*s - pad + k).
        long long ty = iy + pad - k, tx = ix + pad - k;
        long long oy0 = ty < 0 ? 0 : ty / s + 1, ox0 = tx < 0 ? 0 : tx / s + 1;
        long long oy1 = min((iy + pad) / s, oh - 1), ox1 = min((ix + pad) / s, ow - 1);
        float acc = 0.0f;
        for (long long oy = oy0; oy <= oy1; oy++)
            for (long long ox = ox0; ox <= ox1; ox++) {
                long long o = (ch * oh + oy) * ow + ox;
                if (arg[o] == (int)i) acc += dy[o];
            }
        dx[i] = acc;
    }
}

__global__ void lrn_train(const float* x, float* y, float* scale, long long c, long long hw, long long size,
                          double alpha, double beta, double bias) {
    LOOP(i, c * hw) {
        long long ch = i / hw, p = i % hw;
        long long lo = max(ch - (size - 1) / 2, 0LL), hi = min(ch + size / 2, c - 1);
        float s = 0.0f;
        for (long long cc = lo; cc <= hi; cc++) { float v = x[cc * hw + p]; s += v * v; }
        float sc = (float)bias + (float)(alpha / size) * s;
        scale[i] = sc;
        y[i] = x[i] * powf(sc, -(float)beta);
    }
}

// dx_c = dy_c·s_c^-β − 2αβ/n · x_c · Σ_{j: c∈win(j)} dy_j·y_j/s_j
__global__ void lrn_bwd(const float* x, const float* y, const float* scale, const float* dy, float* dx,
                        long long c, long long hw, long long size, double alpha, double beta) {
    LOOP(i, c * hw) {
        long long ch = i / hw, p = i % hw;
        long long jlo = max(ch - size / 2, 0LL), jhi = min(ch + (size - 1) / 2, c - 1);
        float acc = 0.0f;
        for (long long j = jlo; j <= jhi; j++) { long long q = j * hw + p; acc += dy[q] * y[q] / scale[q]; }
        dx[i] = dy[i] * powf(scale[i], -(float)beta) - (float)(2.0 * alpha * beta / size) * x[i] * acc;
    }
}

// Adjoint of im2col, gathering (deterministic): dx[c0+c][iy][ix] = Σ col entries that read it.
__global__ void col2im(const float* col, long long h, long long w, long long c0, long long cin, long long k,
                       long long stride, long long pad, long long oh, long long ow, float* dx) {
    LOOP(i, cin * h * w) {
        long long ix = i % w, iy = (i / w) % h, c = i / (h * w);
        float s = 0.0f;
        for (long long ky = 0; ky < k; ky++) {
            long long ty = iy + pad - ky;
            if (ty < 0 || ty % stride != 0) continue;
            long long oy = ty / stride; if (oy >= oh) continue;
            for (long long kx = 0; kx < k; kx++) {
                long long tx = ix + pad - kx;
                if (tx < 0 || tx % stride != 0) continue;
                long long ox = tx / stride; if (ox >= ow) continue;
                s += col[((c * k + ky) * k + kx) * oh * ow + oy * ow + ox];
            }
        }
        dx[(c0 + c) * h * w + iy * w + ix] = s;
    }
}

// db[r] += Σ_c dy[r][c]
__global__ void bias_grad_rows(const float* dy, float* db, long long rows, long long cols) {
    LOOP(r, rows) { float s = 0.0f; for (long long c = 0; c < cols; c++) s += dy[r * cols + c]; db[r] += s; }
}

// db[o] += Σ_i dy[i][o]
__global__ void bias_grad_cols(const float* dy, float* db, long long n, long long out) {
    LOOP(o, out) { float s = 0.0f; for (long long i = 0; i < n; i++) s += dy[i * out + o]; db[o] += s; }
}

// Softmax cross-entropy: dlogits = (p − onehot)/n, loss and correctness per row.
__global__ void softmax_ce(const float* z, const int* labels, float* dz, float* loss, float* correct,
                           long long n, long long k) {
    LOOP(r, n) {
        const float* row = z + r * k;
        float m = row[0]; long long best = 0;
        for (long long j = 1; j < k; j++) { if (row[j] > m) { m = row[j]; best = j; } }
        double s = 0.0;
        for (long long j = 0; j < k; j++) s += exp((double)(row[j] - m));
        int y = labels[r];
        for (long long j = 0; j < k; j++) {
            double p = exp((double)(row[j] - m)) / s;
            dz[r * k + j] = (float)((p - (j == y ? 1.0 : 0.0)) / n);
        }
        loss[r] = (float)(log(s) - (double)(row[y] - m));
        correct[r] = (best == y) ? 1.0f : 0.0f;
    }
}

// SGD with momentum and L2 decay on the weights: v = μv + g + λw; w −= lr·v.
__global__ void sgd(float* w, const float* g, float* v, long long n, double lr, double mom, double decay) {
    LOOP(i, n) {
        float vi = (float)mom * v[i] + g[i] + (float)decay * w[i];
        v[i] = vi;
        w[i] -= (float)lr * vi;
    }
}

}
