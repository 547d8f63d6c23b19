package train

import "math"

// Agreement compares two precisions' answers on the same inputs: ref and
// got hold n×k probabilities (n inputs, k classes). It returns how many of
// the n top-1 answers agree and the largest difference of any one
// probability — the two numbers the CPU engine's reduced precisions are
// held to (99.9% and 0.005).
func Agreement(ref, got []float32, k int) (agree int, worst float64) {
	for i := 0; i+k <= len(ref) && i+k <= len(got); i += k {
		r, g := ref[i:i+k], got[i:i+k]
		if argmax(r) == argmax(g) {
			agree++
		}
		for j := range r {
			worst = math.Max(worst, math.Abs(float64(r[j]-g[j])))
		}
	}
	return agree, worst
}

func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}
