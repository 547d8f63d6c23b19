package train

import (
	"context"
	"fmt"
	"math"
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
// difference; the engine's bar is 99.9% agreement.
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
	m := baseModel(b, ds.Classes)
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
	b.ResetTimer()
	for range b.N {
		for _, p := range []model.Precision{model.FP16, model.BF16, model.INT8} {
			agree, worst := 0, 0.0
			for i := 0; i < n; i++ {
				ref, got := probs[model.FP32][i*k:(i+1)*k], probs[p][i*k:(i+1)*k]
				if argmax(ref) == argmax(got) {
					agree++
				}
				for j := range ref {
					worst = math.Max(worst, math.Abs(float64(ref[j]-got[j])))
				}
			}
			pct := 100 * float64(agree) / float64(n)
			fmt.Printf("precision %s: top-1 agreement with fp32 %d/%d = %.2f%%, largest probability difference %.4f (val accuracy fp32 %.3f)\n",
				p, agree, n, pct, worst, res.Best.Accuracy)
			b.ReportMetric(pct, string(p)+"_agree_%")
			b.ReportMetric(worst, string(p)+"_maxdiff")
		}
	}
}

func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}
