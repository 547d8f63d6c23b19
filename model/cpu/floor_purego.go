//go:build !cgo || purego

package cpu

// readSum reads every value of p once (in Go: slower than memory on most
// machines, so the pure-Go floor's bandwidth is a lower bound).
func readSum(p []float32) float32 {
	var s [8]float32
	for i := 0; i+8 <= len(p); i += 8 {
		for j := range s {
			s[j] += p[i+j]
		}
	}
	return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7]
}
