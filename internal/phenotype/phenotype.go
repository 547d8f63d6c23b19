// Package phenotype owns what a synthetic class looks like — the shared
// "biology" of Leafwatch's synthetic data: a crop's leaf colour and shape,
// a condition's lesion pattern and colours. Two renderers draw it in their
// own ways: finetune synth (PlantVillage-like: one leaf, centred, plain
// background) and internal/greenhouse (many leaves on a bench under grow
// lights). A model trained on one and shown the other meets the same
// diseases in another setting, as a PlantVillage model meets a greenhouse.
package phenotype

import (
	"hash/fnv"
	"math"

	"github.com/leafwatch/leafwatch/model"
)

// Pattern is a condition's lesion pattern.
type Pattern int

// Lesion patterns.
const (
	Healthy    Pattern = iota
	Spots              // round spots with a yellow halo
	Rings              // ring spots (target-like)
	Blotch             // large irregular patches
	Powder             // white powdery speckle
	Mosaic             // yellow-green mottling
	YellowEdge         // yellowing from the edge in
)

// Look is one class's appearance.
type Look struct {
	Aspect float64    // leaf width / length
	Lobes  float64    // 0..3: how lobed the edge is
	Leaf   [3]float64 // RGB 0..1
	Pattern
	Spot  [3]float64 // lesion RGB 0..1
	SpotR float64    // lesion radius, in pixels of a 256-pixel image
	Spots int        // lesions per leaf
}

func hash01(s, salt string) float64 {
	h := fnv.New64a()
	h.Write([]byte(salt + s))
	return float64(h.Sum64()%1000003) / 1000003
}

// For returns a label's look: the crop decides the leaf, the condition the
// lesions; healthy classes have none.
func For(label string) Look {
	crop, cond := model.SplitLabel(label)
	l := Look{
		Aspect: 0.45 + 0.4*hash01(crop, "a"),
		Lobes:  math.Floor(hash01(crop, "l") * 4),
		Leaf:   [3]float64{0.15 + 0.25*hash01(crop, "r"), 0.45 + 0.35*hash01(crop, "g"), 0.1 + 0.2*hash01(crop, "b")},
	}
	if model.IsHealthy(label) {
		return l
	}
	l.Pattern = Pattern(1 + int(hash01(cond, "p")*6))
	l.Spot = [3]float64{0.3 + 0.6*hash01(cond, "sr"), 0.1 + 0.6*hash01(cond, "sg"), 0.05 + 0.3*hash01(cond, "sb")}
	l.SpotR = 3 + 12*hash01(cond, "rad")
	l.Spots = 6 + int(20*hash01(cond, "n"))
	return l
}
