package train

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/model/cpu"
)

// BenchmarkPrecisionAgreement measures what the CPU engine's reduced
// precisions (fp16, bf16, int8 FC weights) change on a model that has learned
// something: a base AlexNet (seeded random: no ImageNet weights offline)
// with its 38-way last layer trained on cached features of synthetic
// leaves, then 1,000+ synthetic images classified in fp32, fp16, bf16 and int8.
// It reports top-1 agreement with fp32 and the largest probability
// difference; the engine's bar is 99.9% agreement and 0.005.
//
// Two bases: "he" is the seeded He-initialised AlexNet (fc6/fc7 weights
// normal, std 0.015/0.022); "imagenet-fc" gives fc6 and fc7 the value
// ranges of ImageNet-trained AlexNet instead (heavy-tailed around zero,
// std ~0.005, within ±0.05), where per-row scales meet a few large weights
// among many small ones — harder for the reduced formats than a normal law.
func BenchmarkPrecisionAgreement(b *testing.B) {
	labels := model.PlantVillageLabels()
	data := filepath.Join(b.TempDir(), "data")
	if err := WriteSynth(data, labels, 27, 11); err != nil {
		b.Fatal(err)
	}
	ds, err := LoadFolder(data, 0.25, 3)
	if err != nil {
		b.Fatal(err)
	}
	for _, base := range []string{"he", "imagenet-fc"} {
		b.Run(base, func(b *testing.B) {
			m := baseModel(b, ds.Classes)
			if base == "imagenet-fc" {
				imagenetLikeFC(m, rand.New(rand.NewPCG(7, 8)))
				for _, name := range []string{"classifier.1.weight", "classifier.4.weight"} {
					w := m.Params[name].Data
					var big float32
					for _, v := range w {
						big = max(big, v, -v)
					}
					fmt.Printf("imagenet-fc base: %s std %.4f, largest magnitude %.3f\n", name, stdOf(w), big)
				}
			}
			precisionAgreement(b, base, data, ds, m)
		})
	}
}

// imagenetLikeFC redraws fc6's and fc7's weights with ImageNet-trained
// AlexNet's published value ranges: a Student-t law with 3 degrees of
// freedom (heavy tails) scaled to a standard deviation of 0.005, clipped
// to ±0.05. Those weights are 3–4× smaller than He's; the trained network
// makes up for it with larger activations (pool5's reach the tens), so
// conv5 is scaled up by the same factors (ReLU and max pooling commute
// with a positive scale) and fc7's features keep the size the head's
// learning rate is set for. Only fc6/fc7 matter to the reduced
// precisions; conv5 stays fp32 in every one.
func imagenetLikeFC(m *model.Model, rng *rand.Rand) {
	const std, clip = 0.005, 0.05
	scale := std / math.Sqrt(3) // a t₃ variable has variance 3
	redraw := func(w *model.Tensor) (gain float64) {
		before := stdOf(w.Data)
		for i := range w.Data {
			// t₃ = Z / sqrt(χ²₃/3)
			z := rng.NormFloat64()
			var chi float64
			for range 3 {
				n := rng.NormFloat64()
				chi += n * n
			}
			w.Data[i] = float32(max(-clip, min(clip, scale*z/math.Sqrt(chi/3))))
		}
		return before / stdOf(w.Data)
	}
	g6 := redraw(m.Params["classifier.1.weight"])
	g7 := redraw(m.Params["classifier.4.weight"])
	// pool5 grows by g6·g7; fc6's products shrink by g6, so its output
	// (and, to stay in proportion, its bias) is g7 larger than before, and
	// fc7's products bring it back.
	scaleTensor(m.Params["features.10.weight"], g6*g7)
	scaleTensor(m.Params["features.10.bias"], g6*g7)
	scaleTensor(m.Params["classifier.1.bias"], g7)
}

func stdOf(v []float32) float64 {
	var sum, sq float64
	for _, x := range v {
		sum += float64(x)
		sq += float64(x) * float64(x)
	}
	n := float64(len(v))
	return math.Sqrt(sq/n - (sum/n)*(sum/n))
}

func scaleTensor(t *model.Tensor, g float64) {
	for i := range t.Data {
		t.Data[i] *= float32(g)
	}
}

func precisionAgreement(b *testing.B, base, data string, ds *Dataset, m *model.Model) {
	cfg := cachedConfig(data, b.TempDir())
	tr, err := NewTrainer(cfg, ds, m, NewSGD(m, 0.9, 5e-4), nil)
	if err != nil {
		b.Fatal(err)
	}
	res, err := tr.Run(context.Background())
	tr.Close()
	if err != nil {
		b.Fatal(err)
	}
	trained := res.Final
	files := append(append([]Sample(nil), ds.Train...), ds.Val...)
	x := make([]float32, 0, len(files)*trained.InputLen())
	a := Augment{Prep: PreprocessOf(trained.Meta)}
	for _, s := range files {
		img, err := PrepareFile(s.Path, a, nil)
		if err != nil {
			b.Fatal(err)
		}
		x = append(x, img...)
	}
	n, k := len(files), trained.Classes()
	probs := map[model.Precision][]float32{}
	for _, p := range []model.Precision{model.FP32, model.FP16, model.BF16, model.INT8} {
		probs[p] = make([]float32, n*k)
		c := cpu.NewClassifier(trained, model.Options{Precision: p})
		if err := c.Probabilities(context.Background(), x, n, probs[p]); err != nil {
			b.Fatal(err)
		}
	}
	tight := 0 // fp32 answers whose top two are within 0.1: where a precision can flip one
	for i := 0; i < n; i++ {
		if margin(probs[model.FP32][i*k:(i+1)*k]) < 0.1 {
			tight++
		}
	}
	b.ResetTimer()
	for range b.N {
		for _, p := range []model.Precision{model.FP16, model.BF16, model.INT8} {
			agree, worst := Agreement(probs[model.FP32], probs[p], k)
			pct := 100 * float64(agree) / float64(n)
			fmt.Printf("%s base, precision %s: top-1 agreement with fp32 %d/%d = %.2f%%, largest probability difference %.4f (val accuracy fp32 %.3f; %d answers with a top-2 margin under 0.1)\n",
				base, p, agree, n, pct, worst, res.Best.Accuracy, tight)
			b.ReportMetric(pct, string(p)+"_agree_%")
			b.ReportMetric(worst, string(p)+"_maxdiff")
		}
	}
}

// margin is the top-1 minus the top-2 probability.
func margin(p []float32) float32 {
	var a, b float32 // best, second
	for _, v := range p {
		switch {
		case v > a:
			a, b = v, a
		case v > b:
			b = v
		}
	}
	return a - b
}
