package train

import (
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/leafwatch/leafwatch/internal/phenotype"
)

// SynthLeaf draws one 256×256 PlantVillage-like image of a class.
func SynthLeaf(label string, rng *rand.Rand) image.Image {
	const size = 256
	l := phenotype.For(label)
	img := image.NewRGBA(image.Rect(0, 0, size, size))
	bg := [3]float64{0.35 + 0.2*rng.Float64(), 0.3 + 0.15*rng.Float64(), 0.25 + 0.1*rng.Float64()}
	cx, cy := 128+rng.NormFloat64()*10, 128+rng.NormFloat64()*10
	ry := 95 + rng.Float64()*20
	rx := ry * l.Aspect
	rot := rng.Float64() * math.Pi
	cr, sr := math.Cos(rot), math.Sin(rot)
	light := 0.85 + 0.3*rng.Float64()
	type spot struct{ x, y, r float64 }
	var spots []spot
	for i := 0; i < l.Spots; i++ {
		a, d := rng.Float64()*2*math.Pi, math.Sqrt(rng.Float64())*0.85
		spots = append(spots, spot{math.Cos(a) * d, math.Sin(a) * d, l.SpotR * (0.6 + 0.8*rng.Float64()) / ry})
	}
	for y := 0; y < size; y++ {
		for x := 0; x < size; x++ {
			dx, dy := float64(x)-cx, float64(y)-cy
			u := (dx*cr + dy*sr) / rx  // across the leaf
			v := (-dx*sr + dy*cr) / ry // along the leaf
			ang := math.Atan2(v, u)
			edge := 1 + 0.08*l.Lobes*math.Cos(l.Lobes*2*ang)
			r2 := u*u + v*v
			var c [3]float64
			if r2 > edge*edge {
				n := 0.06 * (rng.Float64() - 0.5)
				c = [3]float64{bg[0] + n, bg[1] + n, bg[2] + n}
			} else {
				c = l.Leaf
				vein := math.Exp(-u*u*400) + 0.5*math.Exp(-math.Pow(math.Mod(v*6+u*3+10, 1)-0.5, 2)*200)*math.Exp(-u*u*4)
				for i := range c {
					c[i] += 0.12 * vein
				}
				switch l.Pattern {
				case 1, 2, 3:
					for _, s := range spots {
						d := math.Hypot(u*l.Aspect-s.x*l.Aspect, v-s.y) / s.r
						scale := 1.0
						if l.Pattern == 3 {
							scale = 2.5
						}
						d /= scale
						if d < 1 && (l.Pattern != 2 || d > 0.55) {
							c = l.Spot
						} else if d < 1.4 && l.Pattern != 3 {
							for i := range c {
								c[i] = 0.5*c[i] + 0.5*[3]float64{0.8, 0.75, 0.2}[i]
							}
						}
					}
				case 4:
					if rng.Float64() < 0.35 {
						c = [3]float64{0.92, 0.92, 0.9}
					}
				case 5:
					if math.Sin(u*9+math.Sin(v*7)*2)*math.Sin(v*8) > 0.2 {
						for i := range c {
							c[i] = 0.5*c[i] + 0.5*[3]float64{0.75, 0.85, 0.3}[i]
						}
					}
				case 6:
					if r2 > 0.55*edge*edge {
						c = [3]float64{0.85*l.Spot[0] + 0.1, 0.75, 0.15}
					}
				}
			}
			n := 0.04 * (rng.Float64() - 0.5)
			img.Set(x, y, color.RGBA{clamp8((c[0] + n) * light), clamp8((c[1] + n) * light), clamp8((c[2] + n) * light), 255})
		}
	}
	return img
}

func clamp8(v float64) uint8 { return uint8(math.Max(0, math.Min(255, v*255))) }

// WriteSynth writes perClass JPEGs for each label into root/<label>/,
// seeded: the same seed gives the same files.
func WriteSynth(root string, labels []string, perClass int, seed uint64) error {
	if perClass < 1 {
		return fmt.Errorf("synth: %d images per class", perClass)
	}
	for ci, label := range labels {
		dir := filepath.Join(root, label)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("synth: %w", err)
		}
		for i := 0; i < perClass; i++ {
			rng := rand.New(rand.NewPCG(seed, uint64(ci)<<32|uint64(i)))
			p := filepath.Join(dir, fmt.Sprintf("synth_%04d.jpg", i))
			f, err := os.Create(p)
			if err != nil {
				return fmt.Errorf("synth: %w", err)
			}
			err = jpeg.Encode(f, SynthLeaf(label, rng), &jpeg.Options{Quality: 90})
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("synth %s: %w", p, err)
			}
		}
	}
	return nil
}
