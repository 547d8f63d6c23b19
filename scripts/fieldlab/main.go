// Command fieldlab is the field-data experiment's instrument (make
// field-demo, make leaf-bench, make demo): it draws greenhouse benches with
// known truth (internal/greenhouse), labels a device's kept samples from
// that truth — a scripted labeller standing in for a person, through
// `leafwatchd samples label` like one — and scores models on frames no
// device kept, region by region as leafwatchd sees them.
//
//	fieldlab bench  --out DIR --kind video|frames [--cameras N] [--frames N] [--seed S] [--diseased N] [--size WxH]
//	fieldlab label  --state DIR --truth T.json[,T2.json] --leafwatchd BIN [--max N] [--seed S] [--by NAME]
//	fieldlab score  --model CKPT --frames DIR --regions leaves|tiles|truth [--min-cover F]
//	fieldlab alerts --events FILE --truth T.json
//	fieldlab crops  --out DIR [--benches N] [--seed S]   leaf crops as a labelled export (a grower's past labelling)
//	fieldlab video  --out FILE.avi [--seed S]            the demo's bench: a plant falls ill and recovers
//	fieldlab keepday --model CKPT --video FILE.avi       what the default keep rules keep in a simulated day
//	fieldlab precision --model CKPT [--frames DIR,…] [--images DIR,…]   fp16/bf16/int8 against fp32 on greenhouse regions
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"gocv.io/x/gocv"

	"github.com/leafwatch/leafwatch/internal/fieldset"
	"github.com/leafwatch/leafwatch/internal/greenhouse"
	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/model/cpu"
	"github.com/leafwatch/leafwatch/tools/finetune/train"
	"github.com/leafwatch/leafwatch/vision"
)

// Classes the experiments use: tomato, as a tomato greenhouse grows it.
var Classes = []string{"Tomato___Early_blight", "Tomato___Late_blight", "Tomato___Leaf_Mold", "Tomato___Septoria_leaf_spot",
	"Tomato___Target_Spot", "Tomato___healthy"}

// Truth is a bench's truth: its layout's leaves (as frame 0 shows them).
type Truth struct {
	Camera string             `json:"camera,omitempty"`
	Width  int                `json:"width"`
	Height int                `json:"height"`
	Plants []greenhouse.Plant `json:"plants"`
	Leaves []greenhouse.Leaf  `json:"leaves"`
	Frames int                `json:"frames,omitempty"`
}

func main() {
	cpu.TuneBLAS() // the kernel leafwatchd and finetune pick
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: fieldlab bench|label|score|alerts … (see the source's doc comment)")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "bench":
		err = cmdBench(os.Args[2:])
	case "label":
		err = cmdLabel(os.Args[2:])
	case "score":
		err = cmdScore(os.Args[2:])
	case "alerts":
		err = cmdAlerts(os.Args[2:])
	case "crops":
		err = cmdCrops(os.Args[2:])
	case "video":
		err = cmdVideo(os.Args[2:])
	case "keepday":
		err = cmdKeepDay(os.Args[2:])
	case "precision":
		err = cmdPrecision(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fieldlab:", err)
		os.Exit(1)
	}
}

func parseSize(s string) (int, int, error) {
	var w, h int
	if _, err := fmt.Sscanf(s, "%dx%d", &w, &h); err != nil || w < 64 || h < 64 {
		return 0, 0, fmt.Errorf("--size %q: want WIDTHxHEIGHT", s)
	}
	return w, h, nil
}

// cmdBench draws benches: a video per camera (one layout, a little sway
// and light change frame to frame) with its truth, or still frames of new
// layouts, each with its own truth.
func cmdBench(args []string) error {
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	out := fs.String("out", "", "folder to write into")
	kind := fs.String("kind", "video", "video (CAMERA.avi and CAMERA.json per camera) or frames (NNN.jpg and NNN.json)")
	cams := fs.Int("cameras", 2, "videos: one bench (layout) per camera")
	frames := fs.Int("frames", 40, "frames per video, or still frames")
	seed := fs.Uint64("seed", 1, "the benches' seed")
	diseased := fs.Int("diseased", 2, "diseased plants per bench")
	plants := fs.Int("plants", 6, "plants per bench")
	size := fs.String("size", "1280x720", "frame size")
	fps := fs.Float64("fps", 2, "videos: frames per second")
	fs.Parse(args)
	w, h, err := parseSize(*size)
	if err != nil || *out == "" {
		return errors.Join(err, errors.New("bench: --out is required"))
	}
	os.MkdirAll(*out, 0o755)
	opt := func(s uint64) greenhouse.Options {
		o := greenhouse.Default(Classes, s)
		o.Width, o.Height, o.Plants, o.Diseased = w, h, *plants, *diseased
		scale := float64(w) / 1920
		o.LeafLength = [2]float64{o.LeafLength[0] * scale, o.LeafLength[1] * scale}
		o.Blur *= scale
		return o
	}
	switch *kind {
	case "video":
		for c := 0; c < *cams; c++ {
			name := fmt.Sprintf("bench%d", c+1)
			layout := greenhouse.NewLayout(opt(*seed*1000 + uint64(c)))
			vw, err := gocv.VideoWriterFile(filepath.Join(*out, name+".avi"), "MJPG", *fps, w, h, true)
			if err != nil {
				return err
			}
			var truth Truth
			for f := 0; f < *frames; f++ {
				rng := rand.New(rand.NewPCG(*seed, uint64(c*100000+f)))
				s := layout.Render(greenhouse.Jitter{Sway: 0.02, Light: 0.92 + 0.16*rng.Float64(), Seed: uint64(f + 1)})
				vw.Write(s.Frame)
				if f == 0 {
					truth = Truth{Camera: name, Width: w, Height: h, Plants: s.Plants, Leaves: s.Leaves, Frames: *frames}
				}
				s.Close()
			}
			vw.Close()
			if err := writeJSON(filepath.Join(*out, name+".json"), truth); err != nil {
				return err
			}
		}
	case "frames":
		for f := 0; f < *frames; f++ {
			s := greenhouse.NewLayout(opt(*seed*1000 + uint64(f))).Render(greenhouse.Jitter{Seed: uint64(f)})
			base := filepath.Join(*out, fmt.Sprintf("%03d", f))
			if !gocv.IMWriteWithParams(base+".jpg", s.Frame, []int{gocv.IMWriteJpegQuality, 92}) {
				return fmt.Errorf("cannot write %s.jpg", base)
			}
			err := writeJSON(base+".json", Truth{Width: w, Height: h, Plants: s.Plants, Leaves: s.Leaves})
			s.Close()
			if err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("bench: --kind %q: video or frames", *kind)
	}
	return nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func readTruth(path string) (Truth, error) {
	var t Truth
	b, err := os.ReadFile(path)
	if err != nil {
		return t, err
	}
	return t, json.Unmarshal(b, &t)
}

// truthOf is the label of what a region shows: the leaf covering most of
// it, or not_a_leaf when leaves cover less than minCover of it.
func truthOf(t Truth, box image.Rectangle, minCover float64) string {
	best, bestArea := "", 0
	covered := 0
	for _, l := range t.Leaves {
		in := l.Box.Intersect(box)
		if in.Empty() {
			continue
		}
		// The visible box overstates a leaf's pixels inside the region;
		// scale it by how much of the box the leaf fills.
		a := int(float64(in.Dx()*in.Dy()) * float64(l.Area) / float64(max(1, l.Box.Dx()*l.Box.Dy())))
		covered += a
		if a > bestArea {
			best, bestArea = l.Label, a
		}
	}
	if float64(covered) < minCover*float64(box.Dx()*box.Dy()) || best == "" {
		return fieldset.NotALeaf
	}
	return best
}

// cmdLabel labels a device's kept samples from the benches' truth, like a
// person would: it reads them with `leafwatchd samples list`, finds the
// leaf each region shows, and labels through `leafwatchd samples label`.
func cmdLabel(args []string) error {
	fs := flag.NewFlagSet("label", flag.ExitOnError)
	state := fs.String("state", "", "the device's state directory")
	truths := fs.String("truth", "", "the benches' truth files, comma-separated (CAMERA.json: matched by camera name)")
	bin := fs.String("leafwatchd", "bin/leafwatchd", "the leafwatchd program")
	maxN := fs.Int("max", 0, "label at most this many, chosen at random (0: all)")
	seed := fs.Uint64("seed", 1, "for --max")
	by := fs.String("by", "scripted-labeller", "who the labels are recorded as")
	minCover := fs.Float64("min-cover", 0.25, "a region with less of it covered by leaves is not_a_leaf")
	fs.Parse(args)
	byCamera := map[string]Truth{}
	for _, p := range strings.Split(*truths, ",") {
		t, err := readTruth(p)
		if err != nil {
			return err
		}
		if t.Camera == "" {
			t.Camera = strings.TrimSuffix(filepath.Base(p), ".json")
		}
		byCamera[t.Camera] = t
	}
	out, err := exec.Command(*bin, "samples", "--state-dir", *state, "list", "--unlabelled", "--json").Output()
	if err != nil {
		return fmt.Errorf("leafwatchd samples list: %w", err)
	}
	var recs []fieldset.Record
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line == "" {
			continue
		}
		var r fieldset.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return err
		}
		recs = append(recs, r)
	}
	if *maxN > 0 && len(recs) > *maxN {
		rng := rand.New(rand.NewPCG(*seed, 0x1abe1))
		rng.Shuffle(len(recs), func(i, j int) { recs[i], recs[j] = recs[j], recs[i] })
		recs = recs[:*maxN]
	}
	groups := map[string][]string{}
	for _, r := range recs {
		t, ok := byCamera[r.Camera]
		if !ok {
			return fmt.Errorf("no truth for camera %s", r.Camera)
		}
		box := image.Rect(r.Box[0], r.Box[1], r.Box[0]+r.Box[2], r.Box[1]+r.Box[3])
		l := truthOf(t, box, *minCover)
		groups[l] = append(groups[l], r.ID)
	}
	labels := make([]string, 0, len(groups))
	for l := range groups {
		labels = append(labels, l)
	}
	sort.Strings(labels)
	for _, l := range labels {
		ids := groups[l]
		for len(ids) > 0 {
			n := min(200, len(ids))
			args := append([]string{"samples", "--state-dir", *state, "label", "--new-class", "--as", l, "--by", *by}, ids[:n]...)
			if out, err := exec.Command(*bin, args...).CombinedOutput(); err != nil {
				return fmt.Errorf("leafwatchd samples label: %v: %s", err, out)
			}
			ids = ids[n:]
		}
		fmt.Printf("labelled %d as %s\n", len(groups[l]), l)
	}
	fmt.Printf("scripted labeller: %d samples labelled from the generator's truth\n", len(recs))
	return nil
}

// cmdScore scores a model on still frames, region by region as leafwatchd
// sees them (leaves or tiles), or on the truth's own leaf boxes (perfect
// crops): a region is right when the model's top class is the label of the
// leaf covering most of it. Regions mostly background count apart.
func cmdScore(args []string) error {
	fs := flag.NewFlagSet("score", flag.ExitOnError)
	ckpt := fs.String("model", "", "checkpoint")
	dir := fs.String("frames", "", "folder of NNN.jpg and NNN.json (fieldlab bench --kind frames)")
	regions := fs.String("regions", "leaves", "leaves, tiles (a 2×3 grid with 20% overlap), or truth (each visible leaf's own box, squared)")
	minCover := fs.Float64("min-cover", 0.25, "a region with less of it covered by leaves is background")
	asJSON := fs.Bool("json", false, "one JSON line")
	fs.Parse(args)
	m, err := model.Load(*ckpt)
	if err != nil {
		return err
	}
	r := vision.Regions{Mode: vision.RegionsLeaves, Leaves: vision.DefaultLeaves()}
	switch *regions {
	case "tiles":
		r = vision.Regions{Mode: vision.RegionsTiles, Tiling: vision.Tiling{Rows: 2, Cols: 3, Overlap: 0.2}}
	case "truth":
		r = vision.Regions{Mode: vision.RegionsTiles}
	}
	p, err := train.NewPredictor(m, r, "")
	if err != nil {
		return err
	}
	defer p.Close()
	files, _ := filepath.Glob(filepath.Join(*dir, "*.jpg"))
	sort.Strings(files)
	var sc score
	if *regions == "truth" {
		sc.clf = cpu.NewClassifier(m, model.Options{MaxBatch: model.DefaultMaxBatch, Precision: model.DefaultPrecision})
		defer sc.clf.Close()
	}
	ctx := context.Background()
	for _, f := range files {
		t, err := readTruth(strings.TrimSuffix(f, ".jpg") + ".json")
		if err != nil {
			return err
		}
		if *regions == "truth" {
			if err := sc.truthCrops(ctx, m, f, t); err != nil {
				return err
			}
			continue
		}
		res, err := p.Predict(ctx, f, 1)
		if err != nil {
			return err
		}
		if res.Fallback != "" {
			sc.fallbacks++
		}
		for i, b := range res.Boxes {
			sc.add(truthOf(t, b, *minCover), res.Preds[i].Best().Label, m.Meta.Labels)
		}
	}
	if *asJSON {
		return json.NewEncoder(os.Stdout).Encode(sc.summary(*regions))
	}
	s := sc.summary(*regions)
	fmt.Printf("%s: accuracy %.3f on %d leaf regions (%d background regions, %d of them called not_a_leaf; %d frames fell back)\n",
		*regions, s.Accuracy, s.N, s.Background, s.BackgroundRejected, s.Fallbacks)
	return nil
}

type score struct {
	right, n, background, bgRejected, fallbacks int
	clf                                         *cpu.Classifier // truth crops
}

type scoreSummary struct {
	Regions            string  `json:"mode"`
	Accuracy           float64 `json:"accuracy"`
	N                  int     `json:"leaf_regions"`
	Background         int     `json:"background_regions"`
	BackgroundRejected int     `json:"background_called_not_a_leaf"`
	Fallbacks          int     `json:"fallbacks"`
}

func (s *score) add(truth, pred string, labels []string) {
	if truth == fieldset.NotALeaf {
		s.background++
		if pred == fieldset.NotALeaf {
			s.bgRejected++
		}
		return
	}
	s.n++
	if pred == truth {
		s.right++
	}
}

func (s *score) summary(mode string) scoreSummary {
	acc := 0.0
	if s.n > 0 {
		acc = float64(s.right) / float64(s.n)
	}
	return scoreSummary{mode, acc, s.n, s.background, s.bgRejected, s.fallbacks}
}

// truthCrops classifies each visible leaf's own box (squared, with the
// leaf stage's margin): what a perfect leaf finder would give the model.
func (s *score) truthCrops(ctx context.Context, m *model.Model, path string, t Truth) error {
	img := gocv.IMRead(path, gocv.IMReadColor)
	defer img.Close()
	clf := s.clf
	scratch := vision.NewScratch()
	defer scratch.Close()
	prep := train.PreprocessOf(m.Meta)
	x := make([]float32, m.InputLen())
	total := float64(t.Width * t.Height)
	for _, l := range t.Leaves {
		if float64(l.Area) < vision.DefaultLeaves().MinArea*total || l.Visible < 0.5 {
			continue
		}
		side := int(float64(max(l.Box.Dx(), l.Box.Dy())) * 1.3)
		side = min(side, t.Width, t.Height)
		cx, cy := (l.Box.Min.X+l.Box.Max.X)/2, (l.Box.Min.Y+l.Box.Max.Y)/2
		x0, y0 := min(max(cx-side/2, 0), t.Width-side), min(max(cy-side/2, 0), t.Height-side)
		if err := vision.Prepare(img, image.Rect(x0, y0, x0+side, y0+side), prep, vision.Centre, x, scratch); err != nil {
			return err
		}
		preds, err := clf.Classify(ctx, x, 1, 1)
		if err != nil {
			return err
		}
		s.add(l.Label, preds[0].Best().Label, m.Meta.Labels)
	}
	return nil
}

// cmdAlerts counts the alert starts leafwatchd published (the events as
// mosquitto_sub -v prints them) against the bench's truth: true when the
// label is a diseased plant's class, false otherwise.
func cmdAlerts(args []string) error {
	fs := flag.NewFlagSet("alerts", flag.ExitOnError)
	events := fs.String("events", "", "file of `topic payload` lines")
	truth := fs.String("truth", "", "the bench's truth")
	asJSON := fs.Bool("json", false, "one JSON line")
	fs.Parse(args)
	t, err := readTruth(*truth)
	if err != nil {
		return err
	}
	diseases := map[string]bool{}
	for _, p := range t.Plants {
		if !model.IsHealthy(p.Label) {
			diseases[p.Label] = true
		}
	}
	b, err := os.ReadFile(*events)
	if err != nil {
		return err
	}
	res := struct {
		True   int      `json:"true_alerts"`
		False  int      `json:"false_alerts"`
		Labels []string `json:"labels"`
		Truth  []string `json:"diseased_plants"`
	}{}
	for l := range diseases {
		res.Truth = append(res.Truth, l)
	}
	slices.Sort(res.Truth)
	for _, line := range strings.Split(string(b), "\n") {
		_, payload, ok := strings.Cut(line, " ")
		if !ok || !strings.HasPrefix(strings.TrimSpace(payload), "{") {
			continue
		}
		var a struct {
			Phase string `json:"phase"`
			Label string `json:"label"`
		}
		if json.Unmarshal([]byte(payload), &a) != nil || a.Phase != "start" {
			continue
		}
		res.Labels = append(res.Labels, a.Label)
		if diseases[a.Label] {
			res.True++
		} else {
			res.False++
		}
	}
	if *asJSON {
		return json.NewEncoder(os.Stdout).Encode(res)
	}
	fmt.Printf("alerts: %d true, %d false (%v; diseased plants: %v)\n", res.True, res.False, res.Labels, res.Truth)
	return nil
}

// cmdVideo writes the demo's video: a bench whose diseased plant shows no
// lesions at first, then falls ill (the lesions spread), then is healthy
// again (treated), with its truth.
func cmdVideo(args []string) error {
	fs := flag.NewFlagSet("video", flag.ExitOnError)
	out := fs.String("out", "", "video to write (.avi)")
	seed := fs.Uint64("seed", 4, "the bench's seed")
	size := fs.String("size", "1280x720", "frame size")
	fps := fs.Float64("fps", 2, "frames per second")
	secs := fs.String("seconds", "6,10,6", "seconds healthy, ill, healthy again")
	fs.Parse(args)
	w, h, err := parseSize(*size)
	if err != nil || *out == "" {
		return errors.Join(err, errors.New("video: --out is required"))
	}
	var parts [3]float64
	if _, err := fmt.Sscanf(*secs, "%g,%g,%g", &parts[0], &parts[1], &parts[2]); err != nil {
		return fmt.Errorf("video: --seconds %q: want three numbers", *secs)
	}
	layout := demoLayout(*seed, w, h)
	vw, err := gocv.VideoWriterFile(*out, "MJPG", *fps, w, h, true)
	if err != nil {
		return err
	}
	defer vw.Close()
	f := 0
	for part, secs := range parts {
		n := int(secs * *fps)
		for i := 0; i < n; i++ {
			lesion := 0.001 // healthy-looking: no lesion drawn
			if part == 1 {
				lesion = math.Min(1, 0.4+float64(i)/float64(max(1, n/2)))
			}
			s := layout.Render(greenhouse.Jitter{Sway: 0.015, Light: 1, Seed: uint64(f + 1), Lesion: lesion})
			vw.Write(s.Frame)
			s.Close()
			f++
		}
	}
	return writeJSON(strings.TrimSuffix(*out, filepath.Ext(*out))+".json", Truth{Camera: "bench1", Width: w, Height: h, Plants: layout.Plants(), Frames: f})
}

// demoLayout is the demo video's bench: four plants, one of them ill,
// closer to the camera than the others.
func demoLayout(seed uint64, w, h int) *greenhouse.Layout {
	o := greenhouse.Default(Classes, seed)
	o.Width, o.Height, o.Plants, o.Diseased = w, h, 4, 1
	scale := float64(w) / 1920
	o.LeafLength = [2]float64{o.LeafLength[0] * scale * 1.3, o.LeafLength[1] * scale * 1.3}
	return greenhouse.NewLayout(o)
}
