package daemon

import (
	"context"
	"fmt"
	"image"
	"image/color"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"gocv.io/x/gocv"

	"github.com/leafwatch/leafwatch/internal/greenhouse"
	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/tools/finetune/train"
	"github.com/leafwatch/leafwatch/vision"
)

// TestFinetuneSeesWhatTheDaemonSees: the same file, through leafwatchd's
// camera pipeline (infer: Preprocessor, engine batching) and through
// finetune predict and finetune's evaluation loader, gives bit-identical
// model inputs and probabilities — for each preprocessing case a checkpoint
// can carry (centre crop after resize, squash with resize 0; 224 and 227
// inputs) and for the whole frame and its tiles, and with the daemon's
// precision set to fp16 and predict's --precision to match — and for the
// leaves a camera with regions: leaves finds on a greenhouse bench
// (finetune predict --regions leaves). Training's random crops use the
// same routine with other offsets.
func TestFinetuneSeesWhatTheDaemonSees(t *testing.T) {
	if testing.Short() {
		t.Skip("full AlexNet in -short mode")
	}
	dir := t.TempDir()
	frame := filepath.Join(dir, "frames", "leaf.png")
	writeLeafFrame(t, frame, 1000, 750)
	labels := []string{"Tomato___healthy", "Tomato___Late_blight", "Tomato___Early_blight", "Tomato___Leaf_Mold", "Tomato___Target_Spot"}
	tilings := map[string]string{
		"whole":  "    regions: tiles\n",
		"tiles":  "    regions: tiles\n    tiling: {rows: 2, cols: 3, overlap: 0.25, full: true}\n",
		"leaves": "    regions: leaves\n    leaves: {full: true, max_regions: 4}\n",
	}
	// The leaves case sees a greenhouse bench (the others the leaf frame).
	bench := filepath.Join(dir, "bench", "bench.png")
	os.MkdirAll(filepath.Dir(bench), 0o755)
	scene := greenhouse.NewLayout(greenhouse.Default(labels, 5)).Render(greenhouse.Jitter{})
	gocv.IMWrite(bench, scene.Frame)
	scene.Close()
	cases := []struct {
		name    string
		variant model.Variant
		resize  int
		prec    model.Precision
	}{
		{"crop-224", model.TorchVision, 256, ""},
		{"squash-224", model.TorchVision, 0, ""},
		{"crop-227", model.BVLC, 256, ""},
		{"squash-227", model.BVLC, 0, ""},
		{"crop-224-fp32", model.TorchVision, 256, model.FP32}, // "" is the default, fp16
	}
	for _, tc := range cases {
		m, err := model.NewRandom(tc.variant, len(labels), 11)
		if err != nil {
			t.Fatal(err)
		}
		m.Meta.Labels, m.Meta.Resize = labels, tc.resize
		for i := range m.Params["classifier.6.weight"].Data { // unsaturated probabilities compare more digits
			m.Params["classifier.6.weight"].Data[i] *= 0.02
		}
		ckpt := filepath.Join(dir, tc.name+".safetensors")
		if err := m.Save(ckpt); err != nil {
			t.Fatal(err)
		}
		for tname, tyaml := range tilings {
			if tname != "whole" && os.Getenv("LEAFWATCH_EMULATED") != "" {
				continue // 15 AlexNet passes per case: the host runs them; whole frames suffice here
			}
			frame := frame
			if tname == "leaves" {
				frame = bench
			}
			t.Run(tc.name+"/"+tname, func(t *testing.T) {
				yaml := fmt.Sprintf("device: id\nmodel: %s\nstate_dir: %s\nlisten: 127.0.0.1:0\nbroker: embedded\nembedded_broker: {address: 127.0.0.1:0}\ntop_k: %d\n"+
					"cameras:\n  - name: c1\n    source: folder://%s\n%s", ckpt, t.TempDir(), len(labels), filepath.Dir(frame), tyaml)
				if tc.prec != "" {
					yaml += "precision: " + string(tc.prec) + "\n"
				}
				cfg, err := ParseConfig("id.yaml", []byte(yaml))
				if err != nil {
					t.Fatal(err)
				}
				d, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
				if err != nil {
					t.Fatal(err)
				}
				defer d.closeParts()
				c := d.cams[0]
				c.frame = gocv.NewMat()
				// The folder camera reads files with vision.ReadImage.
				if err := vision.ReadImage(frame, &c.frame); err != nil {
					t.Fatal(err)
				}
				inf, err := c.infer(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				inf.engine.release()
				daemonX, _, err := c.pp.Run(c.frame)
				if err != nil {
					t.Fatal(err)
				}

				loaded, err := model.Load(ckpt)
				if err != nil {
					t.Fatal(err)
				}
				p, err := train.NewPredictor(loaded, c.cfg.RegionConfig(), tc.prec)
				if err != nil {
					t.Fatal(err)
				}
				defer p.Close()
				got, err := p.Predict(context.Background(), frame, len(labels))
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(got.Boxes, inf.boxes) || !slices.Equal(got.Kinds, inf.kinds) {
					t.Fatalf("regions: predict %v %v, daemon %v %v", got.Boxes, got.Kinds, inf.boxes, inf.kinds)
				}
				if tname == "leaves" && (got.Fallback != "" || len(got.Boxes) < 3 || got.Kinds[1] != vision.KindLeaf) {
					t.Fatalf("no leaves found on the bench: %v %v (%s)", got.Boxes, got.Kinds, got.Fallback)
				}
				if i := firstDiff(got.Input, daemonX); i >= 0 {
					t.Fatalf("model input differs at %d: predict %v, daemon %v", i, got.Input[i], daemonX[i])
				}
				for r := range inf.preds {
					if i := firstDiff(got.Preds[r].Probs, inf.preds[r].Probs); i >= 0 {
						t.Fatalf("region %d class %d: predict %v, daemon %v", r, i, got.Preds[r].Probs[i], inf.preds[r].Probs[i])
					}
				}
				// Evaluation (and cached training features) prepare the whole
				// image: the daemon's whole-frame input, the batch's first.
				il := 3 * loaded.Spec.InputSize * loaded.Spec.InputSize
				evalX, err := train.PrepareFile(frame, train.Augment{Prep: train.PreprocessOf(loaded.Meta)}, nil)
				if err != nil {
					t.Fatal(err)
				}
				if i := firstDiff(evalX, daemonX[:il]); i >= 0 {
					t.Fatalf("evaluation input differs at %d: %v vs daemon %v", i, evalX[i], daemonX[i])
				}
				t.Logf("%d regions, top class %s p=%.4f, identical", len(inf.boxes), inf.preds[0].Best().Label, inf.preds[0].Best().Prob)
			})
		}
	}
}

// firstDiff is the first index where a and b differ bit for bit, or -1.
func firstDiff(a, b []float32) int {
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i
		}
	}
	return -1
}

// writeLeafFrame draws a large, wide frame with fine texture (the case where
// resize methods disagree) and saves it losslessly.
func writeLeafFrame(t *testing.T, path string, w, h int) {
	t.Helper()
	img := gocv.NewMatWithSize(h, w, gocv.MatTypeCV8UC3)
	defer img.Close()
	data, _ := img.DataPtrUint8()
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			o := (y*w + x) * 3
			data[o] = uint8(40 + (x*7+y*3)%60)
			data[o+1] = uint8(120 + (x*x+y)%90)
			data[o+2] = uint8(30 + (x^y)%50)
		}
	}
	gocv.Circle(&img, image.Pt(w/3, h/2), h/5, color.RGBA{R: 110, G: 80, B: 40}, -1)
	for i := 0; i < 40; i++ {
		gocv.Circle(&img, image.Pt((i*97)%w, (i*53)%h), 2, color.RGBA{R: 60, G: 40, B: 20}, -1)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if !gocv.IMWrite(path, img) {
		t.Fatal("cannot write the frame")
	}
}
