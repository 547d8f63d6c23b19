package train

import (
	"context"
	"fmt"
	"image"
	"math/rand/v2"
	"sync"

	"gocv.io/x/gocv"

	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/vision"
)

// Augment describes how an image becomes model input: always through
// vision.Prepare, the preprocessing leafwatchd serves with.
type Augment struct {
	Prep   vision.Preprocess
	Random bool // random crop offset and mirror (training); else centred
	Mirror bool // centred and mirrored (the second cached feature)
}

// PreprocessOf is a checkpoint's preprocessing, as leafwatchd applies it.
func PreprocessOf(md model.Metadata) vision.Preprocess {
	return vision.Preprocess{InputSize: md.InputSize, Resize: md.Resize, Mean: md.Mean, Std: md.Std}
}

// imageLoader decodes and prepares images; one per goroutine.
type imageLoader struct {
	img     gocv.Mat
	scratch *vision.Scratch
}

func newImageLoader() *imageLoader {
	return &imageLoader{img: gocv.NewMat(), scratch: vision.NewScratch()}
}

func (l *imageLoader) close() {
	l.img.Close()
	l.scratch.Close()
}

// load decodes path into dst (3×InputSize² normalised RGB). Training draws
// the crop offset within the resized image and the mirror from rng.
func (l *imageLoader) load(path string, a Augment, rng *rand.Rand, dst []float32) error {
	if err := vision.ReadImage(path, &l.img); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	w, h := l.img.Cols(), l.img.Rows()
	crop := vision.Centre
	crop.Mirror = a.Mirror
	if a.Random {
		rw, rh := a.Prep.Geometry(w, h)
		s := a.Prep.InputSize
		crop = vision.Crop{X: rng.IntN(rw - s + 1), Y: rng.IntN(rh - s + 1), Mirror: rng.IntN(2) == 1}
	}
	if err := vision.Prepare(l.img, image.Rect(0, 0, w, h), a.Prep, crop, dst, l.scratch); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// PrepareFile prepares one file as training's loader does: centred, or
// with a random crop and mirror drawn from rng when a.Random.
func PrepareFile(path string, a Augment, rng *rand.Rand) ([]float32, error) {
	if a.Random && rng == nil {
		return nil, fmt.Errorf("PrepareFile: random augmentation needs an RNG")
	}
	l := newImageLoader()
	defer l.close()
	dst := make([]float32, 3*a.Prep.InputSize*a.Prep.InputSize)
	if err := l.load(path, a, rng, dst); err != nil {
		return nil, err
	}
	return dst, nil
}

// batch is a decoded batch; images that failed to decode are left out and
// reported in bad.
type batch struct {
	x      []float32
	labels []int
	bad    []string
	err    error // reading cached features failed
}

// batches decodes the samples in order from position skip on, in
// parallel, and yields batches in order. Each image's augmentation draws
// from an RNG seeded by (seed, epoch, position in the epoch), so results do
// not depend on goroutine timing or on where a resumed run starts.
func batches(ctx context.Context, samples []Sample, order []int, skip, bs, workers int, a Augment, seed uint64, epoch int) <-chan *batch {
	type job struct {
		start int
		out   chan *batch
	}
	il := 3 * a.Prep.InputSize * a.Prep.InputSize
	jobs := make(chan job)
	ordered := make(chan chan *batch, workers*2)
	out := make(chan *batch)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := newImageLoader()
			defer l.close()
			for j := range jobs {
				end := min(j.start+bs, len(order))
				b := &batch{x: make([]float32, 0, (end-j.start)*il)}
				img := make([]float32, il)
				for i := j.start; i < end; i++ {
					s := samples[order[i]]
					rng := rand.New(rand.NewPCG(seed^0xa11a, uint64(epoch)<<32|uint64(i)))
					if err := l.load(s.Path, a, rng, img); err != nil {
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
		for start := skip; start < len(order); start += bs {
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
