package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	"gocv.io/x/gocv"

	"github.com/leafwatch/leafwatch/daemon"
	"github.com/leafwatch/leafwatch/daemon/samples"
	"github.com/leafwatch/leafwatch/internal/fieldset"
	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/model/cpu"
	"github.com/leafwatch/leafwatch/tools/finetune/train"
	"github.com/leafwatch/leafwatch/vision"
)

// cmdKeepDay simulates a day of a camera looking at a video in a loop —
// one sample every interval for 24 hours, on the keeper's own clock — and
// counts what the default keep settings keep: "how many samples would the
// defaults keep in a day of the demo video". The model runs once per
// distinct frame (the loop repeats them); the keep rules, the dedup and
// the caps see every sample.
func cmdKeepDay(args []string) error {
	fs := flag.NewFlagSet("keepday", flag.ExitOnError)
	ckpt := fs.String("model", "", "checkpoint")
	video := fs.String("video", "", "the camera's video (played in a loop)")
	interval := fs.Duration("interval", 5*time.Second, "the camera's interval (the default 5 s)")
	hours := fs.Float64("hours", 24, "hours to simulate")
	fs.Parse(args)
	m, err := model.Load(*ckpt)
	if err != nil {
		return err
	}
	frames, fps, err := readVideo(*video)
	defer func() {
		for _, f := range frames {
			f.Close()
		}
	}()
	if err != nil {
		return err
	}
	pp, err := vision.NewRegionPreprocessor(train.PreprocessOf(m.Meta), vision.Regions{Mode: vision.RegionsLeaves, Leaves: vision.DefaultLeaves()})
	if err != nil {
		return err
	}
	defer pp.Close()
	clf := cpu.NewClassifier(m, model.Options{MaxBatch: model.DefaultMaxBatch, Precision: model.DefaultPrecision}) // as leafwatchd
	defer clf.Close()
	dec := daemon.NewDecider("day", "cam", daemon.DefaultDecision())
	cache := map[int][]samples.Region{} // by frame: the loop repeats them
	dir, _ := os.MkdirTemp("", "keepday-")
	defer os.RemoveAll(dir)
	st, err := samples.Open(dir)
	if err != nil {
		return err
	}
	defer st.Close()
	var now time.Duration
	met := &dayMetrics{kept: map[string]int{}, skipped: map[string]int{}}
	k := samples.NewKeeper(st, map[string]samples.Config{"cam": samples.DefaultConfig()}, samples.Options{MaxBytes: 2048 << 20,
		Clock: func() time.Duration { return now }, Metrics: met, Seed: 7})
	if err := k.Start(context.Background()); err != nil {
		return err
	}
	n := int(*hours * float64(time.Hour) / float64(*interval))
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	work := gocv.NewMat()
	defer work.Close()
	for i := 0; i < n; i++ {
		now = time.Duration(i) * *interval
		fi := int(math.Mod(now.Seconds(), float64(len(frames))/fps)*fps) % len(frames)
		regions, ok := cache[fi]
		if !ok {
			if regions, err = dayRegions(pp, clf, dec, frames[fi]); err != nil {
				return err
			}
			cache[fi] = regions
		}
		best := 0
		for j, r := range regions {
			if r.Disease && (!regions[best].Disease || r.Top[0].Prob > regions[best].Top[0].Prob) {
				best = j
			}
		}
		at := t0.Add(now)
		events := dec.Observe(regions[best].Decided, regions[best].Top[0].Prob, at)
		frames[fi].CopyTo(&work)
		k.Offer(samples.Offer{Camera: "cam", Time: at, Frame: &work, Regions: regions, Alert: len(events) > 0, Chosen: best,
			Model: fieldset.ModelRef{Version: m.Meta.Version, Engine: "cpu"}})
		for k.Pending() {
			time.Sleep(time.Millisecond)
		}
	}
	k.Close()
	sum, _ := st.Summarise(context.Background())
	fmt.Printf("a day of %s (%d distinct frames, a sample every %v: %d samples): kept %d (%.1f MB); by rule %v; skipped %v\n",
		filepath.Base(*video), len(frames), *interval, n, sum.Total, float64(sum.Bytes)/(1<<20), met.kept, met.skipped)
	return nil
}

// readVideo reads every frame of a video file, and its frame rate.
func readVideo(path string) ([]gocv.Mat, float64, error) {
	vc, err := gocv.VideoCaptureFile(path)
	if err != nil {
		return nil, 0, err
	}
	defer vc.Close()
	fps := vc.Get(gocv.VideoCaptureFPS)
	var frames []gocv.Mat
	for {
		f := gocv.NewMat()
		if !vc.Read(&f) || f.Empty() {
			f.Close()
			break
		}
		frames = append(frames, f)
	}
	if len(frames) == 0 || fps <= 0 {
		return frames, 0, fmt.Errorf("%s: no frames", path)
	}
	return frames, fps, nil
}

// dayRegions classifies a frame's leaf regions as the daemon does and
// describes them as the keeper is offered them.
func dayRegions(pp *vision.Preprocessor, clf *cpu.Classifier, dec *daemon.Decider, frame gocv.Mat) ([]samples.Region, error) {
	x, boxes, err := pp.Run(frame)
	if err != nil {
		return nil, err
	}
	preds, err := clf.Classify(context.Background(), x, len(boxes), 5)
	if err != nil {
		return nil, err
	}
	var regions []samples.Region
	for j, b := range boxes {
		top := make([]fieldset.Scored, 0, 5)
		for _, s := range preds[j].Top {
			top = append(top, fieldset.Scored{Label: s.Label, Prob: s.Prob})
		}
		decided := dec.Label(preds[j].Best())
		regions = append(regions, samples.Region{Box: b, Kind: pp.Kinds()[j], Top: top, Decided: decided,
			Threshold: dec.Threshold(top[0].Label), Disease: daemon.IsDisease(decided)})
	}
	return regions, nil
}

type dayMetrics struct {
	kept, skipped map[string]int
}

func (d *dayMetrics) Kept(_, rule string)      { d.kept[rule]++ }
func (d *dayMetrics) Skipped(_, reason string) { d.skipped[reason]++ }
func (d *dayMetrics) Evicted(int)              {}
func (d *dayMetrics) WriteFailed()             {}
func (d *dayMetrics) BudgetFull(bool)          {}
