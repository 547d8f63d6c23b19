//go:build cgo && !purego

package cpu

import "testing"

func TestBLASCoreFor(t *testing.T) {
	for _, tc := range []struct {
		generic, avx512, avx2 bool
		want                  string
	}{
		{true, true, true, "SkylakeX"},
		{true, false, true, "Haswell"},
		{true, false, false, ""},
		{false, true, true, ""},
	} {
		if got := BLASCoreFor(tc.generic, tc.avx512, tc.avx2); got != tc.want {
			t.Errorf("BLASCoreFor(%v,%v,%v) = %q, want %q", tc.generic, tc.avx512, tc.avx2, got, tc.want)
		}
	}
}
