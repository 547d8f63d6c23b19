package train

import (
	"context"
	"fmt"
	"math/rand/v2"
)

// featureCache holds the output of the frozen layers for every image:
// training images as centre crop and mirror (the augmentation that
// survives caching), validation images as centre crop.
type featureCache struct {
	fl         int // floats per image
	train, val []float32
	trainLab   []int
	valLab     []int
}

func (t *Trainer) buildFeatureCache(ctx context.Context) (*featureCache, error) {
	fc := &featureCache{fl: t.m.ActLen(t.from)}
	t.log.Info("computing features of the frozen layers once", "images", 2*len(t.data.Train)+len(t.data.Val), "layer", t.from)
	extract := func(samples []Sample, mirror bool) ([]float32, []int, error) {
		order := make([]int, len(samples))
		for i := range order {
			order[i] = i
		}
		a := t.aug
		a.Random, a.Mirror = false, mirror
		var feats []float32
		var labels []int
		for b := range batches(ctx, samples, order, t.cfg.BatchSize, t.cfg.Workers, a, 0, 0) {
			for _, bad := range b.bad {
				t.log.Warn("skipping unreadable image", "err", bad)
			}
			if len(b.labels) == 0 {
				continue
			}
			var f []float32
			if t.dev != nil {
				var err error
				if f, err = t.dev.Features(b.x, len(b.labels), t.from); err != nil {
					return nil, nil, err
				}
			} else {
				f = t.sess.Features(b.x, len(b.labels), t.from)
			}
			feats = append(feats, f[:len(b.labels)*fc.fl]...)
			labels = append(labels, b.labels...)
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return feats, labels, nil
	}
	center, lab, err := extract(t.data.Train, false)
	if err != nil {
		return nil, err
	}
	mirrored, lab2, err := extract(t.data.Train, true)
	if err != nil {
		return nil, err
	}
	if len(lab) != len(t.data.Train) || len(lab2) != len(lab) {
		return nil, fmt.Errorf("feature cache: %d of %d training images could be decoded; fix or remove the unreadable ones", len(lab), len(t.data.Train))
	}
	fc.train = make([]float32, 0, 2*len(center))
	for i := range lab {
		fc.train = append(fc.train, center[i*fc.fl:(i+1)*fc.fl]...)
		fc.train = append(fc.train, mirrored[i*fc.fl:(i+1)*fc.fl]...)
	}
	fc.trainLab = lab
	if fc.val, fc.valLab, err = extract(t.data.Val, false); err != nil {
		return nil, err
	}
	return fc, nil
}

// trainBatches yields batches in the epoch's order, skipping the batches
// already done; each image's mirror choice is seeded by its position.
func (fc *featureCache) trainBatches(order []int, skip, bs int, seed uint64, epoch int) func() (*batch, bool) {
	pos := skip * bs
	return func() (*batch, bool) {
		if pos >= len(order) {
			return nil, false
		}
		end := min(pos+bs, len(order))
		b := &batch{x: make([]float32, 0, (end-pos)*fc.fl)}
		for i := pos; i < end; i++ {
			rng := rand.New(rand.NewPCG(seed^0xa11a, uint64(epoch)<<32|uint64(i)))
			j := order[i]*2 + rng.IntN(2)
			b.x = append(b.x, fc.train[j*fc.fl:(j+1)*fc.fl]...)
			b.labels = append(b.labels, fc.trainLab[order[i]])
		}
		pos = end
		return b, true
	}
}

func (fc *featureCache) valBatches(bs int) <-chan *batch {
	ch := make(chan *batch)
	go func() {
		defer close(ch)
		for s := 0; s < len(fc.valLab); s += bs {
			e := min(s+bs, len(fc.valLab))
			ch <- &batch{x: fc.val[s*fc.fl : e*fc.fl], labels: fc.valLab[s:e]}
		}
	}()
	return ch
}
