//go:build cgo && !purego

// The read loop MeasureFloor times: sums n floats with sixteen independent
// lanes (one vector add per 64 bytes at -O3), so the loop waits on memory,
// not on its own adds.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LW_READ_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define LW_READ_CLONES
#endif

LW_READ_CLONES
float lw_read_sum(const float *p, long n) {
	float s[16] = {0};
	for (long i = 0; i + 16 <= n; i += 16)
		for (int j = 0; j < 16; j++) s[j] += p[i + j];
	float t = 0;
	for (int j = 0; j < 16; j++) t += s[j];
	return t;
}
