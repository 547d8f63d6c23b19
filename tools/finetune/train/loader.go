package train

import (
	"context"
	"fmt"
	"image"
	"math/rand/v2"
	"sync"

	"gocv.io/x/gocv"
)

// Augment describes how an image becomes model input.
type Augment struct {
	Resize, Crop int // shorter side, then a square crop
	Mean, Std    [3]float32
	Random       bool // random crop and mirror (training); else centre crop
	Mirror       bool // centre crop, mirrored (for cached features)
}

// loadImage decodes path into dst (3×Crop×Crop, normalised RGB).
func loadImage(path string, a Augment, rng *rand.Rand, dst []float32) error {
	img := gocv.IMRead(path, gocv.IMReadColor)
	defer img.Close()
	if img.Empty() {
		return fmt.Errorf("%s: cannot be decoded", path)
	}
	w, h := img.Cols(), img.Rows()
	rw, rh := a.Resize, a.Resize
	if w < h {
		rh = max(a.Resize, int(float64(h)*float64(a.Resize)/float64(w)+0.5))
	} else {
		rw = max(a.Resize, int(float64(w)*float64(a.Resize)/float64(h)+0.5))
	}
	res := gocv.NewMat()
	defer res.Close()
	interp := gocv.InterpolationArea
	if rw > w {
		interp = gocv.InterpolationLinear
	}
	gocv.Resize(img, &res, image.Pt(rw, rh), 0, 0, interp)
	x0, y0 := (rw-a.Crop)/2, (rh-a.Crop)/2
	mirror := a.Mirror
	if a.Random {
		x0, y0 = rng.IntN(rw-a.Crop+1), rng.IntN(rh-a.Crop+1)
		mirror = rng.IntN(2) == 1
	}
	data, err := res.DataPtrUint8()
	if err != nil {
		return err
	}
	step, s := res.Step(), a.Crop
	var lut [3][256]float32
	for c := 0; c < 3; c++ {
		for v := 0; v < 256; v++ {
			lut[c][v] = (float32(v)/255 - a.Mean[c]) / a.Std[c]
		}
	}
	for y := 0; y < s; y++ {
		row := data[(y0+y)*step:]
		for x := 0; x < s; x++ {
			sx := x0 + x
			if mirror {
				sx = x0 + s - 1 - x
			}
			px := row[sx*3 : sx*3+3]
			o := y*s + x
			dst[o] = lut[0][px[2]]
			dst[s*s+o] = lut[1][px[1]]
			dst[2*s*s+o] = lut[2][px[0]]
		}
	}
	return nil
}

// batch is a decoded batch; images that failed to decode are left out and
// reported in bad.
type batch struct {
	x      []float32
	labels []int
	bad    []string
}

// batches decodes the samples in order, in parallel, and yields batches in
// order. Each image's augmentation draws from an RNG seeded by (seed,
// epoch, position), so results do not depend on goroutine timing.
func batches(ctx context.Context, samples []Sample, order []int, bs, workers int, a Augment, seed uint64, epoch int) <-chan *batch {
	type job struct {
		start int
		out   chan *batch
	}
	il := 3 * a.Crop * a.Crop
	jobs := make(chan job)
	ordered := make(chan chan *batch, workers*2)
	out := make(chan *batch)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				end := min(j.start+bs, len(order))
				b := &batch{x: make([]float32, 0, (end-j.start)*il)}
				img := make([]float32, il)
				for i := j.start; i < end; i++ {
					s := samples[order[i]]
					rng := rand.New(rand.NewPCG(seed^0xa11a, uint64(epoch)<<32|uint64(i)))
					if err := loadImage(s.Path, a, rng, img); err != nil {
						b.bad = append(b.bad, err.Error())
						continue
					}
					b.x = append(b.x, img...)
					b.labels = append(b.labels, s.Label)
				}
				j.out <- b
			}
		}()
	}
	go func() {
		defer close(ordered)
		defer close(jobs)
		for start := 0; start < len(order); start += bs {
			ch := make(chan *batch, 1)
			select {
			case ordered <- ch:
			case <-ctx.Done():
				return
			}
			select {
			case jobs <- job{start, ch}:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() {
		defer close(out)
		for ch := range ordered {
			select {
			case b := <-ch:
				select {
				case out <- b:
				case <-ctx.Done():
				}
			case <-ctx.Done():
			}
		}
		wg.Wait()
	}()
	return out
}

// LoadImage decodes one image as the model wants it (centre crop).
func LoadImage(path string, a Augment, dst []float32) error {
	a.Random = false
	return loadImage(path, a, nil, dst)
}
