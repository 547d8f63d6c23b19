//go:build cgo && !purego

package cpu

import "testing"

func TestBLASCoreFor(t *testing.T) {
	zen4 := CPUFeatures{AVX512: true, AVX512BF16: true, AVX2FMA: true}
	skx := CPUFeatures{AVX512: true, AVX2FMA: true}
	hsw := CPUFeatures{AVX2FMA: true}
	for _, tc := range []struct {
		name string
		core string
		f    CPUFeatures
		want string
	}{
		{"an AVX-512 BF16 EPYC taken for a Zen", "Haswell", zen4, "Cooperlake"},
		{"an AVX-512 BF16 CPU OpenBLAS does not know", "Prescott", zen4, "Cooperlake"},
		{"an AVX-512 Xeon OpenBLAS does not know", "Prescott", skx, "SkylakeX"},
		{"an AVX-512 Xeon taken for Haswell", "Haswell", skx, "SkylakeX"},
		{"an AVX-512 CPU given Zen's kernel", "Zen", skx, "SkylakeX"},
		{"Cooperlake chosen right", "Cooperlake", zen4, ""},
		{"SkylakeX chosen on a BF16 CPU is kept", "SkylakeX", zen4, ""},
		{"Sapphire Rapids chosen right", "SapphireRapids", zen4, ""},
		{"an AVX2 CPU OpenBLAS does not know", "Prescott", hsw, "Haswell"},
		{"an AVX2 CPU with its own kernel", "Zen", hsw, ""},
		{"Haswell chosen right", "Haswell", hsw, ""},
		{"an old CPU", "Prescott", CPUFeatures{}, ""},
	} {
		if got := BLASCoreFor(tc.core, tc.f); got != tc.want {
			t.Errorf("%s: BLASCoreFor(%q, %+v) = %q, want %q", tc.name, tc.core, tc.f, got, tc.want)
		}
	}
}
