// Leafwatch CUDA kernels, compiled at start with NVRTC. Every parameter is
// 8 bytes wide (pointers, long long, double) because gorgonia.org/cu's
// Launch copies each argument as a 64-bit word.
extern "C" {

#define LOOP(i, n) for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); i += (long long)blockDim.x * gridDim.x)

// col[(c*k*k + ky*k + kx) * oh*ow + oy*ow + ox] = x[c0 + c][oy*s - pad + ky][ox*s - pad + kx]
__global__ void im2col(const float* x, long long h, long long w, long long c0, long long cin, long long k,
                       long long stride, long long pad, long long oh, long long ow, float* col) {
    long long p = oh * ow;
    LOOP(i, cin * k * k * p) {
        long long q = i % p, row = i / p;
        long long kx = row % k, ky = (row / k) % k, c = c0 + row / (k * k);
        long long iy = (q / ow) * stride - pad + ky, ix = (q % ow) * stride - pad + kx;
        col[i] = (iy >= 0 && iy < h && ix >= 0 && ix < w) ? x[(c * h + iy) * w + ix] : 0.0f;
    }
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
