package half

import "testing"

// BenchmarkFromFloat32Rows converts fc6's shape (4096×9216), as every
// model load does.
func BenchmarkFromFloat32Rows(b *testing.B) {
	w := make([]float32, 4096*9216)
	for i := range w {
		w[i] = float32(i%1999-999) * 1e-5
	}
	b.SetBytes(int64(len(w) * 4))
	for i := 0; i < b.N; i++ {
		FromFloat32Rows(w, 4096, 9216)
	}
}
