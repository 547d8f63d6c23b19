package train

import (
	"context"
	"math"
	"path/filepath"

	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/model/cpu"
)

// evaluator classifies samples in eval mode (centre crops, no dropout) and
// counts the answers: what a training run does after each epoch and what
// the reports of a finished model need, with nothing else of a Trainer.
type evaluator struct {
	classes        []string
	k              int // the model's classes (a reject class included)
	batch, workers int
	aug            Augment
	// logits runs the network from layer from on n inputs.
	logits func(from int, x []float32, n int) ([]float32, error)
	// feat, when set, holds the validation set's features: run then
	// reads them (fed to layer from) instead of decoding the images.
	feat *featureCache
	from int
}

// evaluation is one run's counts: all samples, per source, and the mean loss.
type evaluation struct {
	all      *Confusion
	bySource [2]*Confusion
	loss     float64
}

// run classifies samples (through the feature cache when there is one:
// then samples must be the validation set it was built from).
func (ev evaluator) run(ctx context.Context, samples []Sample) (evaluation, error) {
	r := evaluation{all: NewConfusion(ev.classes), bySource: [2]*Confusion{NewConfusion(ev.classes), NewConfusion(ev.classes)}}
	var lossSum float64
	n := 0
	add := func(x []float32, labels []int, from int) error {
		logits, err := ev.logits(from, x, len(labels))
		if err != nil {
			return err
		}
		for i, y := range labels {
			row := logits[i*ev.k : (i+1)*ev.k]
			best := argmax(row)
			lossSum += cpu.CrossEntropy(row, y)
			r.all.Add(y, best)
			if n < len(samples) {
				r.bySource[samples[n].Source].Add(y, best)
			}
			n++
		}
		return nil
	}
	if ev.feat != nil {
		next := ev.feat.valBatches(ev.batch)
		for b, ok := next(); ok; b, ok = next() {
			if b.err != nil {
				return evaluation{}, b.err
			}
			if err := add(b.x, b.labels, ev.from); err != nil {
				return evaluation{}, err
			}
		}
	} else {
		a := ev.aug
		a.Random = false
		bctx, stop := context.WithCancel(ctx)
		defer stop() // an error below stops the decoders
		for b := range batches(bctx, samples, identity(len(samples)), 0, ev.batch, ev.workers, a, 0, 0) {
			r.all.Skipped = append(r.all.Skipped, b.bad...)
			if len(b.labels) == 0 {
				continue
			}
			if err := add(b.x, b.labels, 0); err != nil {
				return evaluation{}, err
			}
		}
	}
	if ctx.Err() != nil {
		return evaluation{}, ctx.Err()
	}
	r.loss = lossSum / math.Max(1, float64(n))
	return r, nil
}

// WriteReports evaluates m on the dataset's validation images and writes
// confusion.csv, report.csv (per class, and per source side by side when
// there are field samples) and confusion.png into dir; with a test set
// (the field's baseline samples, or a whole test folder), also test.csv
// and confusion-test.csv. dir "" writes nothing.
func WriteReports(ctx context.Context, dir string, m *model.Model, data *Dataset, bs, workers int) (*Result, error) {
	sess := cpu.NewTrainSession(m, bs, nil)
	ev := evaluator{classes: data.Classes, k: m.Spec.Classes, batch: bs, workers: max(1, workers), aug: Augment{Prep: PreprocessOf(m.Meta)},
		logits: func(from int, x []float32, n int) ([]float32, error) { return sess.Logits(from, x, n), nil }}
	res := &Result{}
	var writes []func() error
	if len(data.Val) > 0 {
		r, err := ev.run(ctx, data.Val)
		if err != nil {
			return nil, err
		}
		conf, field := r.all, r.bySource[SourceField]
		res.Best, res.Confusion = conf.Report(), conf
		res.BySource = [2]Report{r.bySource[SourceData].Report(), field.Report()}
		writes = append(writes,
			func() error { return conf.WriteCSV(filepath.Join(dir, "confusion.csv")) },
			func() error { return writeSourceReport(filepath.Join(dir, "report.csv"), res.Best, res.BySource) },
			func() error { return WriteConfusionPNG(conf, filepath.Join(dir, "confusion.png")) })
		if res.BySource[SourceField].Total > 0 {
			writes = append(writes, func() error { return field.WriteCSV(filepath.Join(dir, "confusion-field.csv")) })
		}
	}
	if len(data.Test) > 0 {
		r, err := ev.run(ctx, data.Test)
		if err != nil {
			return nil, err
		}
		conf := r.all
		res.Test, res.TestConfusion = conf.Report(), conf
		res.TestKeptWith = keptWithAccuracy(data.Test, data.Classes)
		writes = append(writes,
			func() error { return writeSourceReport(filepath.Join(dir, "test.csv"), res.Test, [2]Report{}) },
			func() error { return conf.WriteCSV(filepath.Join(dir, "confusion-test.csv")) })
	}
	if dir != "" {
		for _, w := range writes {
			if err := w(); err != nil {
				return nil, err
			}
		}
	}
	return res, nil
}

// keptWithAccuracy is how often the model the field samples were kept
// with had their label as its top class (-1 when no sample says).
func keptWithAccuracy(samples []Sample, classes []string) float64 {
	n, right := 0, 0
	for _, s := range samples {
		if s.KeptWith == "" {
			continue
		}
		n++
		if s.KeptWith == classes[s.Label] {
			right++
		}
	}
	if n == 0 {
		return -1
	}
	return float64(right) / float64(n)
}
