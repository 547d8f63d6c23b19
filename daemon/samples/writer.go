package samples

import (
	"context"
	"fmt"
	"image"
	"time"

	"gocv.io/x/gocv"

	"github.com/leafwatch/leafwatch/internal/fieldset"
)

// writer stores the frames Offer took, one at a time, until Close.
func (k *Keeper) writer() {
	defer k.wg.Done()
	h := newHasher()
	defer h.close()
	small := gocv.NewMat()
	defer small.Close()
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			if k.full.Load() {
				k.recheckBudget()
			}
		case j := <-k.jobs:
			k.process(j, h, &small)
			j.cam.pool <- j.frame
		case <-k.done:
			// Frames already taken are written, within a bound: shutdown
			// must not wait on a slow disk.
			deadline := time.Now().Add(3 * time.Second)
			for time.Now().Before(deadline) {
				select {
				case j := <-k.jobs:
					k.process(j, h, &small)
					j.cam.pool <- j.frame
					continue
				default:
				}
				return
			}
			return
		}
	}
}

// process hashes, deduplicates, encodes and stores one taken frame.
func (k *Keeper) process(j *job, h *hasher, small *gocv.Mat) {
	cs, o := j.cam, j.o
	if j.frame.Empty() {
		return
	}
	bounds := image.Rect(0, 0, j.frame.Cols(), j.frame.Rows())
	frameID := o.Camera + "-" + o.Time.UTC().Format("20060102T150405.000Z")
	now := k.mono()
	out, hashes, taken := k.cutRegions(j, h, bounds, frameID, now)
	if len(out) == 0 {
		return
	}
	k.yield()
	fr, err := k.frameCopy(j, small, bounds, frameID)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		k.yield()
		if err = k.store.Add(ctx, fr, out); err == nil {
			cs.mu.Lock()
			cs.recent = append(cs.recent, hashes...)
			cs.mu.Unlock()
			if k.met != nil {
				for _, s := range out {
					for _, r := range s.Record.Rules {
						k.met.Kept(o.Camera, r)
					}
				}
			}
			k.enforce(ctx)
			return
		}
	}
	k.writeFailed(err)
	// Not kept: the hourly count gives back what these took of it.
	cs.mu.Lock()
	cs.hour = cs.hour[:max(0, len(cs.hour)-taken)]
	cs.mu.Unlock()
}

// cutRegions cuts the job's regions worth keeping from the frame at its
// full resolution, as JPEG with their records, in the order the rules
// ranked them; duplicates of recent samples and what the per-frame and
// hourly caps leave out are skipped (counted), except for samples an
// exempt rule kept. taken is how many of the hourly cap they used.
func (k *Keeper) cutRegions(j *job, h *hasher, bounds image.Rectangle, frameID string, now time.Duration) (out []NewSample, hashes []kept, taken int) {
	cs, o := j.cam, j.o
	for _, i := range j.order {
		r, rules := o.Regions[i], j.rules[i]
		box := r.Box.Intersect(bounds)
		if box.Empty() {
			continue
		}
		if taken >= cs.cfg.MaxPerFrame && !exempt(rules) {
			k.skip(o.Camera, SkipPerFrame, 1)
			continue
		}
		k.yield()
		roi := j.frame.Region(box)
		hash := h.hash(roi)
		label := r.Top[0].Label
		if !exempt(rules) {
			if k.duplicate(cs, now, hash, label) {
				roi.Close()
				k.skip(o.Camera, SkipDuplicate, 1)
				continue
			}
			if k.overCap(cs) {
				roi.Close()
				k.skip(o.Camera, SkipHourlyCap, 1)
				continue
			}
		}
		jpeg, err := encodeJPEG(roi, k.opt.Quality)
		roi.Close()
		if err != nil {
			k.writeFailed(err)
			continue
		}
		rec := fieldset.Record{ID: fmt.Sprintf("%s-%d", frameID, i), Camera: o.Camera, Time: o.Time.UTC(), FrameID: frameID,
			FrameSize: [2]int{bounds.Dx(), bounds.Dy()}, Box: [4]int{box.Min.X, box.Min.Y, box.Dx(), box.Dy()}, Region: r.Kind,
			Preprocess: o.Preprocess, Threshold: r.Threshold, Model: o.Model, Top: r.Top[:min(5, len(r.Top))], Rules: rules}
		out = append(out, NewSample{Record: rec, JPEG: jpeg, DHash: hash, Margin: margin(r.Top)})
		hashes = append(hashes, kept{at: now, hash: hash, label: label})
		if !exempt(rules) {
			taken++
			cs.mu.Lock()
			cs.hour = append(cs.hour, now)
			cs.mu.Unlock()
		}
	}
	return out, hashes, taken
}

// frameCopy is the downscaled copy of the whole frame kept beside its
// samples.
func (k *Keeper) frameCopy(j *job, small *gocv.Mat, bounds image.Rectangle, frameID string) (NewFrame, error) {
	w := min(k.opt.FrameWidth, bounds.Dx())
	hh := max(1, bounds.Dy()*w/bounds.Dx())
	gocv.Resize(j.frame, small, image.Point{w, hh}, 0, 0, gocv.InterpolationArea)
	fjpeg, err := encodeJPEG(*small, 80)
	if err != nil {
		return NewFrame{}, err
	}
	return NewFrame{ID: frameID, Camera: j.o.Camera, Time: j.o.Time, Width: bounds.Dx(), Height: bounds.Dy(), JPEG: fjpeg}, nil
}

// duplicate reports whether a region looks like one kept from the camera
// within the dedup window that the model answered the same way, and
// forgets what left the window.
func (k *Keeper) duplicate(cs *camState, now time.Duration, hash uint64, label string) bool {
	if cs.cfg.DedupWindow <= 0 {
		return false
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	i := 0
	for i < len(cs.recent) && now-cs.recent[i].at > cs.cfg.DedupWindow {
		i++
	}
	cs.recent = cs.recent[i:]
	for _, r := range cs.recent {
		if r.label == label && distance(r.hash, hash) <= cs.cfg.DedupDistance {
			return true
		}
	}
	return false
}

// enforce applies the disk budget after a write; it tells once when
// labelled samples alone fill it (keeping stops) and when they no longer do.
func (k *Keeper) enforce(ctx context.Context) {
	if k.opt.MaxBytes <= 0 {
		return
	}
	b, err := k.store.Enforce(ctx, k.opt.MaxBytes)
	if err != nil {
		k.writeFailed(err)
		return
	}
	if b.Evicted > 0 && k.met != nil {
		k.met.Evicted(b.Evicted)
	}
	k.setFull(b.Full, b.Labelled)
}

func (k *Keeper) setFull(full bool, labelled int64) {
	if k.full.Swap(full) != full {
		if full {
			k.log.Warn("samples: labelled samples fill the samples budget; keeping has stopped (labelling still works). Raise samples.max_mb, or export the samples and delete some with `leafwatchd samples delete`",
				"labelled_mb", labelled>>20, "max_mb", k.opt.MaxBytes>>20)
		} else {
			k.log.Info("samples: below the budget again; keeping resumes")
		}
	}
	if k.met != nil {
		k.met.BudgetFull(full)
	}
}

// recheckBudget looks again whether the budget is still full: samples
// may have been labelled "unsure" and deleted by hand, or exported and
// deleted.
func (k *Keeper) recheckBudget() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lb, err := k.store.labelledBytes(ctx)
	if err != nil {
		return false
	}
	full := lb >= k.opt.MaxBytes
	k.setFull(full, lb)
	return !full
}

// writeFailed counts a failure to keep (a full or read-only disk) and
// logs it at most once an hour: keeping never stops the daemon.
func (k *Keeper) writeFailed(err error) {
	if k.met != nil {
		k.met.WriteFailed()
	}
	now := int64(k.mono())
	last := k.failLog.Load()
	if last != 0 && time.Duration(now-last) < time.Hour {
		return
	}
	if k.failLog.CompareAndSwap(last, now) {
		k.log.Error("samples: cannot keep samples (logged at most once an hour; leafwatch_samples_write_failures_total counts them); classification and alerts go on", "err", err)
	}
}

func encodeJPEG(m gocv.Mat, quality int) ([]byte, error) {
	buf, err := gocv.IMEncodeWithParams(gocv.JPEGFileExt, m, []int{gocv.IMWriteJpegQuality, quality})
	if err != nil {
		return nil, fmt.Errorf("samples: JPEG: %w", err)
	}
	defer buf.Close()
	return append([]byte(nil), buf.GetBytes()...), nil
}
