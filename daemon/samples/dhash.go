package samples

import (
	"image"
	"math/bits"

	"gocv.io/x/gocv"
)

// hasher computes 64-bit difference hashes (dHash): the region in grey,
// shrunk to 9×8 by area averaging, one bit per pair of horizontal
// neighbours (is the left one brighter). Near-identical views of a leaf —
// the same leaf a minute later, a little more light — differ in a few
// bits; another leaf or another framing in many. It keeps its buffers
// between calls (one hasher per goroutine).
type hasher struct {
	grey, small gocv.Mat
}

func newHasher() *hasher { return &hasher{grey: gocv.NewMat(), small: gocv.NewMat()} }

func (h *hasher) close() {
	h.grey.Close()
	h.small.Close()
}

// hash returns the dHash of a BGR region.
func (h *hasher) hash(region gocv.Mat) uint64 {
	gocv.CvtColor(region, &h.grey, gocv.ColorBGRToGray)
	gocv.Resize(h.grey, &h.small, image.Point{9, 8}, 0, 0, gocv.InterpolationArea)
	var out uint64
	for y := 0; y < 8; y++ {
		for x := 0; x < 8; x++ {
			out <<= 1
			if h.small.GetUCharAt(y, x) > h.small.GetUCharAt(y, x+1) {
				out |= 1
			}
		}
	}
	return out
}

// distance is the number of bits two hashes differ in.
func distance(a, b uint64) int { return bits.OnesCount64(a ^ b) }
