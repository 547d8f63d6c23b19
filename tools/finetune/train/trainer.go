package train

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/model/cpu"
	"github.com/leafwatch/leafwatch/model/engine"
	"github.com/leafwatch/leafwatch/model/gpu"
)

// ErrInterrupted is returned when ctx ends a run. Everything done so far is
// kept: the training state (state.safetensors) or the features cached so far.
var ErrInterrupted = errors.New("interrupted")

// Interrupted is the error Run returns when ctx ends it.
type Interrupted struct {
	State  string // the training state saved to resume from; "" if none yet
	Detail string
}

func (e *Interrupted) Error() string {
	if e.Detail == "" {
		return ErrInterrupted.Error()
	}
	return ErrInterrupted.Error() + " " + e.Detail
}

func (e *Interrupted) Unwrap() error { return ErrInterrupted }

// Config is one fine-tuning run.
type Config struct {
	Data    string
	ValFrac float64
	Seed    uint64

	Epochs      int
	BatchSize   int
	Schedule    Schedule
	Momentum    float64
	WeightDecay float64
	// NewLayerLRMult multiplies the learning rate of the replaced (and
	// reset) layers.
	NewLayerLRMult float64
	// ResetPenultimate says fc7 was re-initialised (it then counts as new).
	ResetPenultimate bool
	// TrainFrom is the first trained layer group ("conv1" trains all,
	// "fc6" freezes the convolutions).
	TrainFrom string
	// CacheFeatures computes the frozen layers once per image (centre crop
	// and its mirror) instead of every epoch. Needs TrainFrom ≥ fc6.
	CacheFeatures bool
	// FeatureCacheDir keeps the cached features; default OUT/features.
	FeatureCacheDir string
	Balanced        bool
	// FieldShare is the share of every batch drawn from the field samples
	// (cycling through them, reshuffled each pass), the rest from the
	// --data images: a few hundred field samples among tens of thousands
	// would otherwise be a rounding error of every epoch. 0 mixes them in
	// like any image.
	FieldShare float64
	Patience   int // epochs without a better val macro-F1 before stopping; 0 = never
	Workers    int
	MaxSteps   int // stop (as if interrupted) after this many batches; for tests
	// Engine is auto, cpu or cuda: where the training passes run.
	Engine string

	// Flags are the command-line settings that shaped the run, saved in
	// the state so a resume continues with them (see finetune train).
	Flags map[string]string

	Out      string
	Progress io.Writer
	Terminal bool
	Log      *slog.Logger
}

// Result summarises a finished run.
type Result struct {
	History   []EpochLog
	Best      Report // the validation set's, of the best checkpoint
	BySource  [2]Report
	BestEpoch int
	Final     *model.Model
	Confusion *Confusion
	// Test is the test set's (the field's baseline samples of the
	// validation side), and TestKeptWith the accuracy the model that kept
	// them had on them (-1: unknown).
	Test          Report
	TestConfusion *Confusion
	TestKeptWith  float64
}

// Validate checks the numbers before any work starts.
func (c Config) Validate() error {
	if c.BatchSize < 1 || c.Epochs < 1 {
		return fmt.Errorf("batch size %d and epochs %d must be positive", c.BatchSize, c.Epochs)
	}
	if err := c.Schedule.Validate(); err != nil {
		return err
	}
	if !finite(c.Momentum) || c.Momentum < 0 || c.Momentum >= 1 {
		return fmt.Errorf("momentum %v: must be 0 ≤ momentum < 1", c.Momentum)
	}
	if !finite(c.WeightDecay) || c.WeightDecay < 0 {
		return fmt.Errorf("weight decay %v: must be a finite number ≥ 0", c.WeightDecay)
	}
	if !finite(c.NewLayerLRMult) || c.NewLayerLRMult < 0 {
		return fmt.Errorf("new-layer learning-rate multiplier %v: must be a finite number ≥ 0", c.NewLayerLRMult)
	}
	if c.Patience < 0 {
		return fmt.Errorf("patience %d: must be ≥ 0", c.Patience)
	}
	if !finite(c.FieldShare) || c.FieldShare < 0 || c.FieldShare >= 1 {
		return fmt.Errorf("field share %v: must be 0 ≤ share < 1", c.FieldShare)
	}
	return nil
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// Trainer owns one run.
type Trainer struct {
	cfg  Config
	data *Dataset
	m    *model.Model
	opt  *SGD
	st   State
	sess *cpu.TrainSession
	aug  Augment
	log  *slog.Logger

	first, from int // first trained layer; layer whose input is fed
	feat        *featureCache
	dev         gpu.TrainStepper // nil: the CPU engine

	bySource [2]*Confusion // the last Evaluate's, per source
}

// NewTrainer prepares a run on a model whose head already matches the
// dataset (see model.ReplaceHead), or resumes one from a state file.
func NewTrainer(cfg Config, data *Dataset, m *model.Model, opt *SGD, st *State) (*Trainer, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Workers < 1 {
		cfg.Workers = 2
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(data.Classes) != m.Spec.Classes {
		return nil, fmt.Errorf("dataset has %d classes, the model's head %d", len(data.Classes), m.Spec.Classes)
	}
	for i, c := range data.Classes {
		if m.Meta.Labels[i] != c {
			return nil, fmt.Errorf("class %d is %q in the dataset but %q in the model: class folders changed since this run started", i, c, m.Meta.Labels[i])
		}
	}
	if err := checkWritable(cfg.Out); err != nil {
		return nil, err
	}
	t := &Trainer{cfg: cfg, data: data, m: m, opt: opt, log: cfg.Log}
	if cfg.TrainFrom == "" {
		cfg.TrainFrom = "conv1"
	}
	first, err := m.FirstLayerOfGroup(cfg.TrainFrom)
	if err != nil {
		return nil, err
	}
	t.first, t.from = first, 0
	// Frozen parameters must not move at all, not even by weight decay
	// (cached features depend on them); new layers may learn faster.
	last := m.Spec.Groups()[len(m.Spec.Groups())-1]
	pen := m.Spec.Groups()[len(m.Spec.Groups())-2]
	for i, l := range m.Spec.Layers {
		if l.Name == "" {
			continue
		}
		for _, suffix := range []string{".weight", ".bias"} {
			switch {
			case i < first:
				opt.Mult[l.Name+suffix] = 0
			case cfg.NewLayerLRMult > 0 && (l.Group == last || (cfg.ResetPenultimate && l.Group == pen)):
				opt.Mult[l.Name+suffix] = float32(cfg.NewLayerLRMult)
			default:
				delete(opt.Mult, l.Name+suffix)
			}
		}
	}
	if st != nil {
		t.st = *st
		t.resumed(cfg)
	} else {
		t.st = State{Seed: cfg.Seed, Schedule: cfg.Schedule, Flags: cfg.Flags}
	}
	t.cfg.Schedule = t.st.Schedule
	t.aug = Augment{Prep: PreprocessOf(m.Meta), Random: true}
	if cfg.CacheFeatures {
		firstFC := -1
		for i, l := range m.Spec.Layers {
			if l.Kind == model.FC {
				firstFC = i
				break
			}
		}
		if first < firstFC {
			return nil, fmt.Errorf("--cache-features needs the convolutions frozen (--train-from fc6 or later)")
		}
		t.from = first
		for t.from > 0 && m.Spec.Layers[t.from-1].Kind == model.Dropout {
			t.from-- // keep dropout in training
		}
	}
	t.sess = cpu.NewTrainSession(m, cfg.BatchSize, nil)
	dev, err := engine.SelectTrainer(m, cfg.Engine, cfg.BatchSize, gpu.OptimSettings{Momentum: opt.Momentum, WeightDecay: opt.WeightDecay, Mult: opt.Mult, Velocity: opt.Velocity, Log: cfg.Log}, cfg.Log)
	if err != nil {
		return nil, fmt.Errorf("--%w", err)
	}
	t.dev = dev
	return t, nil
}

// resumed adapts a saved state to what may change on resume.
func (t *Trainer) resumed(cfg Config) {
	if cfg.Flags != nil {
		t.st.Flags = cfg.Flags
	}
	// A cosine curve spans the run's epochs. Extending (or shortening) a
	// run re-draws it over the new count from here on; the epochs already
	// run keep the rates they had.
	if s := &t.st.Schedule; s.Kind == "cosine" && s.Epochs != float64(cfg.Epochs) {
		old := s.At(float64(t.st.Epoch))
		s.Epochs = float64(cfg.Epochs)
		t.log.Info("cosine schedule re-drawn over the new epoch count", "epochs", cfg.Epochs,
			"lr_was", old, "lr_now", s.At(float64(t.st.Epoch)))
	}
	// Early stopping is judged with the patience given now.
	if t.st.Done {
		t.st.Done = cfg.Patience > 0 && t.st.BadEpochs >= cfg.Patience
		if t.st.Done {
			t.log.Info("this run stopped early; give a larger --patience (or 0) to train on", "best_epoch", t.st.BestEpoch, "epochs_without_improvement", t.st.BadEpochs)
		}
	}
}

// Close releases the training device and the feature cache.
func (t *Trainer) Close() error {
	t.feat.close()
	if t.dev != nil {
		return t.dev.Close()
	}
	return nil
}

// sync brings device weights and momentum back before anything is saved.
func (t *Trainer) sync() error {
	if t.dev == nil {
		return nil
	}
	return t.dev.Sync(t.opt.Velocity)
}

func checkWritable(dir string) error {
	if dir == "" {
		return errors.New("no output folder given (--out)")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("output folder %s cannot be created: %v — choose a folder you can write to", dir, err)
	}
	f, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return fmt.Errorf("output folder %s is not writable: %v — choose a folder you can write to", dir, err)
	}
	f.Close()
	os.Remove(f.Name())
	return nil
}

// epochOrder is the sample order of an epoch: shuffled, or class-balanced
// sampling with replacement; with a field share, every batch takes that
// share from the field samples (cycling through them) and the rest from
// the data, in the same order.
func (t *Trainer) epochOrder(epoch int) []int {
	rng := rand.New(rand.NewPCG(t.st.Seed, uint64(epoch)+0x0a0a))
	var data, field []int
	for i, s := range t.data.Train {
		if s.Source == SourceField && t.cfg.FieldShare > 0 {
			field = append(field, i)
		} else {
			data = append(data, i)
		}
	}
	data = t.sampleOrder(rng, data)
	if len(field) == 0 || len(data) == 0 {
		return data
	}
	bs := t.cfg.BatchSize
	k := max(1, int(math.Round(float64(bs)*t.cfg.FieldShare)))
	k = min(k, bs-1)
	frng := rand.New(rand.NewPCG(t.st.Seed, uint64(epoch)+0xf1e1d))
	next, cycle := 0, slices.Clone(field)
	frng.Shuffle(len(cycle), func(i, j int) { cycle[i], cycle[j] = cycle[j], cycle[i] })
	order := make([]int, 0, len(data)*bs/(bs-k)+bs)
	for pos := 0; pos < len(data); pos += bs - k {
		order = append(order, data[pos:min(pos+bs-k, len(data))]...)
		for range k {
			if next == len(cycle) {
				next = 0
				frng.Shuffle(len(cycle), func(i, j int) { cycle[i], cycle[j] = cycle[j], cycle[i] })
			}
			order = append(order, cycle[next])
			next++
		}
	}
	return order
}

// sampleOrder shuffles idx, or (balanced) draws as many with replacement,
// every class equally likely.
func (t *Trainer) sampleOrder(rng *rand.Rand, idx []int) []int {
	if !t.cfg.Balanced {
		rng.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
		return idx
	}
	byClass := make([][]int, len(t.data.Classes))
	for _, i := range idx {
		byClass[t.data.Train[i].Label] = append(byClass[t.data.Train[i].Label], i)
	}
	var nonEmpty [][]int
	for _, c := range byClass {
		if len(c) > 0 {
			nonEmpty = append(nonEmpty, c)
		}
	}
	order := make([]int, len(idx))
	for i := range order {
		c := nonEmpty[rng.IntN(len(nonEmpty))]
		order[i] = c[rng.IntN(len(c))]
	}
	return order
}

// Run trains until the epochs are done, early stopping triggers, or ctx
// ends (then a resumable state is saved and ErrInterrupted returned).
func (t *Trainer) Run(ctx context.Context) (*Result, error) {
	if t.cfg.CacheFeatures && t.feat == nil {
		fc, err := t.openFeatureCache(ctx)
		if err != nil {
			return nil, err
		}
		t.feat = fc
	}
	steps := 0
	for t.st.Epoch < t.cfg.Epochs && !t.st.Done {
		e := t.st.Epoch
		start := time.Now()
		order := t.epochOrder(e)
		nb := (len(order) + t.cfg.BatchSize - 1) / t.cfg.BatchSize
		prog := newProgress(t.cfg.Progress, t.cfg.Terminal, nb, fmt.Sprintf("epoch %d/%d", e+1, t.cfg.Epochs))
		prog.set(t.st.Step)
		ectx, cancel := context.WithCancel(ctx)
		var next func() (*batch, bool)
		if t.feat != nil {
			next = t.feat.trainBatches(order, t.st.Step, t.cfg.BatchSize, t.st.Seed, e)
		} else {
			ch := batches(ectx, t.data.Train, order, min(t.st.Step*t.cfg.BatchSize, len(order)), t.cfg.BatchSize, t.cfg.Workers, t.aug, t.st.Seed, e)
			next = func() (*batch, bool) { b, ok := <-ch; return b, ok }
		}
		interrupted := false
		imgs := 0
		for {
			if ctx.Err() != nil || (t.cfg.MaxSteps > 0 && steps >= t.cfg.MaxSteps) {
				interrupted = true
				break
			}
			b, ok := next()
			if !ok {
				break
			}
			if b.err != nil {
				cancel()
				return nil, b.err
			}
			for _, bad := range b.bad {
				t.log.Warn("skipping unreadable image", "err", bad)
			}
			if len(b.labels) > 0 {
				if err := t.step(b, e, nb); err != nil {
					cancel()
					return nil, err
				}
			}
			imgs += len(b.labels)
			t.st.Step++
			t.st.GlobalStep++
			steps++
			prog.set(t.st.Step)
			prog.note(fmt.Sprintf("loss %.3f acc %.3f", t.st.LossSum/math.Max(1, float64(t.st.Seen)), float64(t.st.Correct)/math.Max(1, float64(t.st.Seen))))
		}
		cancel()
		prog.done()
		if interrupted || ctx.Err() != nil {
			return nil, t.interrupted(fmt.Sprintf("in epoch %d after batch %d of %d", e+1, t.st.Step, nb))
		}
		if err := t.finishEpoch(ctx, e, time.Since(start), imgs); err != nil {
			if ctx.Err() != nil { // in the evaluation, before anything changed
				return nil, t.interrupted(fmt.Sprintf("while evaluating epoch %d", e+1))
			}
			return nil, err
		}
	}
	res, err := t.finish(ctx)
	if err != nil && ctx.Err() != nil {
		return nil, &Interrupted{State: t.statePath(), Detail: "while writing the final reports"}
	}
	return res, err
}

func (t *Trainer) statePath() string { return filepath.Join(t.cfg.Out, "state.safetensors") }

// interrupted saves a resumable state and says where.
func (t *Trainer) interrupted(detail string) error {
	if err := t.saveResumable(); err != nil {
		return fmt.Errorf("interrupted %s, and the state could not be saved: %w", detail, err)
	}
	return &Interrupted{State: t.statePath(), Detail: detail}
}

func (t *Trainer) step(b *batch, epoch, nb int) error {
	frac := float64(epoch) + float64(t.st.Step)/float64(nb)
	lr := float32(t.cfg.Schedule.At(frac))
	rng := rand.New(rand.NewPCG(t.st.Seed^0xd50, uint64(t.st.GlobalStep)))
	var (
		loss    float64
		correct int
		err     error
	)
	if t.dev != nil {
		loss, correct, err = t.dev.Step(t.from, b.x, b.labels, t.first, lr, rng)
	} else {
		t.sess.SetRand(rng)
		t.sess.ZeroGrad()
		loss, correct, err = t.sess.StepFrom(t.from, b.x, b.labels, t.first)
	}
	if err != nil {
		return err
	}
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return fmt.Errorf("loss became %v at epoch %d step %d: lower the learning rate", loss, epoch+1, t.st.Step)
	}
	t.st.LossSum += loss * float64(len(b.labels))
	t.st.Correct += correct
	t.st.Seen += len(b.labels)
	if t.dev != nil {
		return nil // the device applied the step
	}
	return t.opt.Step(t.m, t.sess.Grads, lr)
}

func (t *Trainer) saveResumable() error {
	if err := t.sync(); err != nil {
		return err
	}
	return SaveState(t.statePath(), t.m, t.opt, t.st)
}

// Evaluate classifies the validation set (centre crops, eval mode, through
// the feature cache when there is one); the confusion per source is kept
// in t.bySource.
func (t *Trainer) Evaluate(ctx context.Context) (*Confusion, float64, error) {
	ev := evaluator{classes: t.data.Classes, k: t.m.Spec.Classes, batch: t.cfg.BatchSize, workers: t.cfg.Workers, aug: t.aug, feat: t.feat, from: t.from,
		logits: func(from int, x []float32, n int) ([]float32, error) {
			if t.dev != nil {
				return t.dev.Logits(from, x, n)
			}
			return t.sess.Logits(from, x, n), nil
		}}
	r, err := ev.run(ctx, t.data.Val)
	if err != nil {
		return nil, 0, err
	}
	t.bySource = r.bySource
	return r.all, r.loss, nil
}

func (t *Trainer) finishEpoch(ctx context.Context, e int, took time.Duration, imgs int) error {
	conf, vloss, err := t.Evaluate(ctx)
	if err != nil {
		return err
	}
	rep := conf.Report()
	log := EpochLog{Epoch: e + 1, LR: t.cfg.Schedule.At(float64(e)),
		TrainLoss: t.st.LossSum / math.Max(1, float64(t.st.Seen)), TrainAcc: float64(t.st.Correct) / math.Max(1, float64(t.st.Seen)),
		ValLoss: vloss, ValAcc: rep.Accuracy, ValMacroF1: rep.MacroF1, Seconds: took.Seconds(), ImagesPerSec: float64(imgs) / took.Seconds()}
	if pv := t.bySource[SourceData].Report(); pv.Total > 0 {
		log.ValAccData = pv.Accuracy
	}
	if fr := t.bySource[SourceField].Report(); fr.Total > 0 {
		log.ValAccField, log.ValField = fr.Accuracy, fr.Total
	}
	t.st.History = append(t.st.History, log)
	attrs := []any{"epoch", e + 1, "train_loss", round3(log.TrainLoss), "train_acc", round3(log.TrainAcc),
		"val_acc", round3(log.ValAcc), "val_macro_f1", round3(log.ValMacroF1), "images_per_s", round3(log.ImagesPerSec)}
	if log.ValField > 0 {
		attrs = append(attrs, "val_acc_plantvillage", round3(log.ValAccData), "val_acc_field", round3(log.ValAccField))
	}
	t.log.Info("epoch done", attrs...)
	t.st.Epoch, t.st.Step, t.st.LossSum, t.st.Correct, t.st.Seen = e+1, 0, 0, 0, 0
	t.stamp(rep)
	if err := t.sync(); err != nil {
		return err
	}
	if err := t.m.Save(filepath.Join(t.cfg.Out, "latest.safetensors")); err != nil {
		return err
	}
	if rep.MacroF1 > t.st.BestF1 || len(t.st.History) == 1 {
		t.st.BestF1, t.st.BestEpoch, t.st.BadEpochs = rep.MacroF1, e+1, 0
		if err := t.m.Save(filepath.Join(t.cfg.Out, "best.safetensors")); err != nil {
			return err
		}
	} else if t.st.BadEpochs++; t.cfg.Patience > 0 && t.st.BadEpochs >= t.cfg.Patience {
		t.log.Info("early stopping: validation macro-F1 has not improved", "epochs", t.st.BadEpochs, "best_epoch", t.st.BestEpoch)
		t.st.Done = true
	}
	if err := writeLogCSV(filepath.Join(t.cfg.Out, "log.csv"), t.st.History); err != nil {
		return err
	}
	return t.saveResumable()
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

func (t *Trainer) stamp(rep Report) {
	t.m.Meta.Training = &model.TrainingSummary{Dataset: t.data.Root, TrainImages: len(t.data.Train), ValImages: len(t.data.Val),
		Epochs: t.st.Epoch, BatchSize: t.cfg.BatchSize, ValAccuracy: rep.Accuracy, ValMacroF1: rep.MacroF1, FinishedAt: time.Now().UTC(),
		Recipe: map[string]string{"schedule": t.cfg.Schedule.Kind, "lr": fmt.Sprint(t.cfg.Schedule.Base), "momentum": fmt.Sprint(t.opt.Momentum),
			"weight_decay": fmt.Sprint(t.opt.WeightDecay), "train_from": t.cfg.TrainFrom, "seed": fmt.Sprint(t.st.Seed)}}
}

func (t *Trainer) finish(ctx context.Context) (*Result, error) {
	best, err := model.Load(filepath.Join(t.cfg.Out, "best.safetensors"))
	if err != nil {
		return nil, err
	}
	res, err := WriteReports(ctx, t.cfg.Out, best, t.data, t.cfg.BatchSize, t.cfg.Workers)
	if err != nil {
		return nil, err
	}
	if err := WriteCurvesPNG(t.st.History, filepath.Join(t.cfg.Out, "curves.png")); err != nil {
		return nil, err
	}
	res.History, res.BestEpoch, res.Final = t.st.History, t.st.BestEpoch, t.m
	return res, nil
}

func writeLogCSV(path string, h []EpochLog) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.Write([]string{"epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1", "val_acc_plantvillage", "val_acc_field", "seconds", "images_per_s"})
	for _, e := range h {
		field := ""
		if e.ValField > 0 {
			field = fmt.Sprintf("%.5f", e.ValAccField)
		}
		w.Write([]string{strconv.Itoa(e.Epoch), fmt.Sprintf("%g", e.LR), fmt.Sprintf("%.5f", e.TrainLoss), fmt.Sprintf("%.5f", e.TrainAcc),
			fmt.Sprintf("%.5f", e.ValLoss), fmt.Sprintf("%.5f", e.ValAcc), fmt.Sprintf("%.5f", e.ValMacroF1), fmt.Sprintf("%.5f", e.ValAccData), field,
			fmt.Sprintf("%.1f", e.Seconds), fmt.Sprintf("%.2f", e.ImagesPerSec)})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
