package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gocv.io/x/gocv"

	"github.com/leafwatch/leafwatch/internal/fieldset"
	"github.com/leafwatch/leafwatch/internal/greenhouse"
	"github.com/leafwatch/leafwatch/vision"
)

// cmdCrops writes an export folder (samples.jsonl, LABEL/ID.jpg) of the
// visible leaves of new benches, labelled from the truth: what a grower's
// earlier labelling on a device would have produced. The demo trains on it.
func cmdCrops(args []string) error {
	fs := flag.NewFlagSet("crops", flag.ExitOnError)
	out := fs.String("out", "", "export folder to write")
	benches := fs.Int("benches", 8, "benches (each its own camera and day)")
	seed := fs.Uint64("seed", 1, "the benches' seed")
	size := fs.String("size", "1280x720", "frame size")
	demo := fs.Uint64("demo-seed", 0, "also the leaves of the demo video's bench (fieldlab video --seed), ill and healthy")
	fs.Parse(args)
	w, h, err := parseSize(*size)
	if err != nil || *out == "" {
		return errors.Join(err, errors.New("crops: --out is required"))
	}
	bs := cropBenches(*benches, *seed, *demo, w, h)
	finder, err := vision.NewLeafFinder(vision.DefaultLeaves())
	if err != nil {
		return err
	}
	defer finder.Close()
	var lines []string
	for b, bench := range bs {
		ls, err := bench.writeCrops(b, finder, *out)
		if err != nil {
			return err
		}
		lines = append(lines, ls...)
	}
	if err := os.WriteFile(filepath.Join(*out, fieldset.RecordsFile), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	fmt.Printf("crops: %d labelled leaves from %d benches in %s\n", len(lines), len(bs), *out)
	return nil
}

type cropBench struct {
	layout *greenhouse.Layout
	lesion float64
}

// cropBenches are n new benches of frame size w×h and, with a demo seed,
// the demo bench as the camera saw it on several days: ill, and before the
// lesions showed (those leaves labelled healthy).
func cropBenches(n int, seed, demo uint64, w, h int) []cropBench {
	var bs []cropBench
	for b := 0; b < n; b++ {
		o := greenhouse.Default(Classes, seed*7919+uint64(b))
		o.Width, o.Height, o.Diseased = w, h, 3
		scale := float64(w) / 1920
		o.LeafLength = [2]float64{o.LeafLength[0] * scale, o.LeafLength[1] * scale}
		bs = append(bs, cropBench{greenhouse.NewLayout(o), 1})
	}
	if demo != 0 {
		l := demoLayout(demo, w, h)
		for range 3 {
			bs = append(bs, cropBench{l, 1}, cropBench{l, 0.001})
		}
	}
	return bs
}

// writeCrops renders bench number b and writes, under out, the regions a
// device cuts from it (the leaf stage: sometimes a whole plant) and each
// visible leaf's own box, labelled as the scripted labeller does; it
// returns their records as JSON lines.
func (bench cropBench) writeCrops(b int, finder *vision.LeafFinder, out string) ([]string, error) {
	s := bench.layout.Render(greenhouse.Jitter{Seed: uint64(b), Lesion: bench.lesion, Sway: 0.03, Light: 0.9 + 0.2*float64(b%3)/2})
	defer s.Close()
	w, h := s.Frame.Cols(), s.Frame.Rows()
	cam := fmt.Sprintf("bench%d", b+1)
	at := time.Date(2026, 11, 1+b, 10, 0, 0, 0, time.UTC)
	truth := Truth{Width: w, Height: h, Plants: s.Plants, Leaves: s.Leaves}
	if bench.lesion < 0.05 {
		for i := range truth.Leaves {
			truth.Leaves[i].Label = "Tomato___healthy" // the lesions do not show yet
		}
	}
	var boxes []image.Rectangle
	found, _, _ := finder.Find(s.Frame)
	for _, r := range found {
		boxes = append(boxes, r.Box)
	}
	for _, l := range truth.Leaves {
		if l.Visible < 0.6 || float64(l.Area) < 0.004*float64(w*h) {
			continue
		}
		side := min(int(float64(max(l.Box.Dx(), l.Box.Dy()))*1.3), w, h)
		cx, cy := (l.Box.Min.X+l.Box.Max.X)/2, (l.Box.Min.Y+l.Box.Max.Y)/2
		x0, y0 := min(max(cx-side/2, 0), w-side), min(max(cy-side/2, 0), h-side)
		boxes = append(boxes, image.Rect(x0, y0, x0+side, y0+side))
	}
	var lines []string
	for i, box := range boxes {
		label := truthOf(truth, box, 0.25)
		if label == fieldset.NotALeaf {
			continue
		}
		id := fmt.Sprintf("%s-%s-%d", cam, at.Format("20060102T150405.000Z"), i)
		rec := fieldset.Record{ID: id, Camera: cam, Time: at, Day: at.Format("2006-01-02"), FrameID: cam + "-0", FrameSize: [2]int{w, h},
			Box: [4]int{box.Min.X, box.Min.Y, box.Dx(), box.Dy()}, Region: "leaf", Rules: []string{fieldset.RuleBaseline}, Label: label, LabelledBy: "scripted-labeller",
			Image: filepath.Join(label, id+".jpg")}
		roi := s.Frame.Region(box)
		p := filepath.Join(out, rec.Image)
		os.MkdirAll(filepath.Dir(p), 0o755)
		ok := gocv.IMWriteWithParams(p, roi, []int{gocv.IMWriteJpegQuality, 85})
		roi.Close()
		if !ok {
			return nil, fmt.Errorf("cannot write %s", p)
		}
		j, _ := json.Marshal(rec)
		lines = append(lines, string(j))
	}
	return lines, nil
}
