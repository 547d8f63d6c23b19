package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/term"

	"github.com/leafwatch/leafwatch/internal/bundle"
	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/model/gpu"
	"github.com/leafwatch/leafwatch/tools/finetune/train"
)

// recordedFlags shape a run. They are saved in the training state, and
// --resume restores every one not given again. Given again with another
// value, only resumeMayChange ones are accepted: the rest would make the
// resumed run a different run.
var recordedFlags = []string{"data", "val", "seed", "epochs", "batch", "schedule", "lr", "step-every", "gamma", "warmup",
	"momentum", "weight-decay", "new-layer-lr-mult", "train-from", "cache-features", "feature-cache", "balanced",
	"patience", "keep-penultimate", "base", "variant", "field", "field-share", "field-val", "reject-class"}

var resumeMayChange = map[string]bool{
	"epochs":        true, // extend or shorten (a cosine schedule is re-drawn)
	"patience":      true,
	"data":          true, // the folder moved; its classes are checked
	"feature-cache": true, // a location, not a setting
}

// pathList is a repeatable flag of folders; a value may also hold several,
// separated by the path-list separator (':').
type pathList []string

func (p *pathList) String() string { return strings.Join(*p, string(os.PathListSeparator)) }

func (p *pathList) Set(v string) error {
	for _, d := range filepath.SplitList(v) {
		if d != "" {
			*p = append(*p, d)
		}
	}
	return nil
}

func cmdTrain(ctx context.Context, args []string, log *slog.Logger) error {
	fs := flag.NewFlagSet("train", flag.ExitOnError)
	var cfg train.Config
	f := defineTrainFlags(fs, &cfg)
	fs.Parse(args)
	if fs.NArg() > 0 {
		return fmt.Errorf("train: unexpected argument %q (flags start with --)", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })

	var (
		m   *model.Model
		opt *train.SGD
		st  *train.State
	)
	if *f.resume != "" {
		mm, o, s, err := train.LoadState(*f.resume)
		if err != nil {
			return err
		}
		m, opt, st = mm, o, &s
		if s.Flags == nil {
			log.Warn("this state file predates saved settings: give the flags the run was started with (at least --data and --train-from)")
		} else if err := restoreFlags(fs, given, s.Flags); err != nil {
			return err
		}
		if cfg.Out == "" {
			cfg.Out = filepath.Dir(*f.resume)
		}
	}
	if err := f.complete(fs, &cfg, log); err != nil {
		return err
	}
	ds, err := f.dataset(cfg, log)
	if err != nil {
		return err
	}
	if st != nil {
		log.Info("resuming", "epoch", st.Epoch+1, "step", st.Step, "train_from", cfg.TrainFrom, "epochs", cfg.Epochs)
	} else if m, opt, err = f.startModel(cfg, ds, given, log); err != nil {
		return err
	}
	tr, err := train.NewTrainer(cfg, ds, m, opt, st)
	if err != nil {
		return err
	}
	defer tr.Close()
	res, err := tr.Run(ctx)
	if err != nil {
		var ie *train.Interrupted
		if errors.As(err, &ie) {
			return fmt.Errorf("%w\nto continue: %s", err, continueCommand(os.Args, ie.State))
		}
		return err
	}
	best := filepath.Join(cfg.Out, "best.safetensors")
	if _, err := bundle.WriteManifest(best, "", evaluation(res)); err != nil {
		return fmt.Errorf("manifest of %s: %w", best, err)
	}
	printTrainResult(res, best)
	return nil
}

// trainFlags are train's flags that are not fields of train.Config.
type trainFlags struct {
	base, variant, resume, sched, engine, cudaLibs *string
	keepPen, reject                                *bool
	lr, stepEvery, gamma, warmup, fieldVal         *float64
	fields                                         pathList
}

// defineTrainFlags declares train's flags, into cfg where they are its
// fields.
func defineTrainFlags(fs *flag.FlagSet, cfg *train.Config) *trainFlags {
	f := &trainFlags{}
	fs.StringVar(&cfg.Data, "data", "", "image folder: one sub-folder per class, or train/ and val/")
	fs.StringVar(&cfg.Out, "out", "", "output folder (checkpoints, logs, reports); with --resume, default the state file's folder")
	f.base = fs.String("base", "", "checkpoint with ImageNet weights (from finetune import); empty = random initialisation")
	f.variant = fs.String("variant", "torchvision", "variant for random initialisation (torchvision, bvlc)")
	f.resume = fs.String("resume", "", "training-state file to continue (OUT/state.safetensors); the run's settings come from it")
	f.keepPen = fs.Bool("keep-penultimate", false, "keep fc7's weights (the PlantVillage paper) instead of resetting them")
	fs.Float64Var(&cfg.ValFrac, "val", 0.2, "validation fraction when DATA has no train/ and val/")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "random seed: same seed, same run")
	fs.IntVar(&cfg.Epochs, "epochs", 30, "epochs (may be raised on --resume to extend a run)")
	fs.IntVar(&cfg.BatchSize, "batch", 16, "batch size")
	f.sched = fs.String("schedule", "step", "learning-rate schedule: step, cosine (spans --epochs), constant")
	f.lr = fs.Float64("lr", 0.005, "base learning rate")
	f.stepEvery = fs.Float64("step-every", 10, "step schedule: epochs between drops")
	f.gamma = fs.Float64("gamma", 0.1, "step schedule: factor per drop")
	f.warmup = fs.Float64("warmup", 0, "epochs of linear warmup")
	fs.Float64Var(&cfg.Momentum, "momentum", 0.9, "SGD momentum")
	fs.Float64Var(&cfg.WeightDecay, "weight-decay", 5e-4, "L2 weight decay (weights only, not biases)")
	fs.Float64Var(&cfg.NewLayerLRMult, "new-layer-lr-mult", 10, "learning-rate multiplier for the replaced layers")
	fs.StringVar(&cfg.TrainFrom, "train-from", "conv1", "first trained layer group; earlier groups are frozen (conv1..conv5, fc6, fc7, fc8)")
	fs.BoolVar(&cfg.CacheFeatures, "cache-features", false, "compute frozen layers once and keep them on disk (needs --train-from fc6 or later; mirror is the only augmentation)")
	fs.StringVar(&cfg.FeatureCacheDir, "feature-cache", "", "folder for cached features, shared between runs (default OUT/features)")
	fs.BoolVar(&cfg.Balanced, "balanced", false, "class-balanced sampling")
	fs.IntVar(&cfg.Patience, "patience", 0, "stop after this many epochs without a better val macro-F1 (0 = never)")
	fs.IntVar(&cfg.Workers, "workers", 2, "image decoding goroutines")
	fs.Var(&f.fields, "field", "a folder of samples kept on a device (leafwatchd samples export, finetune pull); repeat for several")
	fs.Float64Var(&cfg.FieldShare, "field-share", 0.25, "share of every batch drawn from the field samples (0: mixed in like any image)")
	f.fieldVal = fs.Float64("field-val", 0.25, "share of the field samples that validate (whole camera-days)")
	f.reject = fs.Bool("reject-class", false, "train not_a_leaf (field samples labelled \"not a leaf\") as a class of its own")
	f.engine = fs.String("engine", "auto", "auto (CUDA when built with it and a GPU is present), cpu or cuda")
	f.cudaLibs = fs.String("cuda-libs", "", "folders (colon-separated) to take cuBLAS and NVRTC from; default: the newest CUDA the driver runs, searched")
	return f
}

// complete fills the rest of cfg from the flags (after a resume restored
// them) and validates it.
func (f *trainFlags) complete(fs *flag.FlagSet, cfg *train.Config, log *slog.Logger) error {
	cfg.Engine = *f.engine
	if *f.cudaLibs != "" {
		gpu.SetLibraryDirs(strings.Split(*f.cudaLibs, ":"))
	}
	if cfg.Data == "" || cfg.Out == "" {
		return errors.New("train: --data and --out are required")
	}
	// Saved as absolute paths, so a resume works from any folder.
	for _, p := range []*string{&cfg.Data, f.base, &cfg.FeatureCacheDir} {
		if *p != "" {
			if abs, err := filepath.Abs(*p); err == nil {
				*p = abs
			}
		}
	}
	for i, p := range f.fields {
		if abs, err := filepath.Abs(p); err == nil {
			f.fields[i] = abs
		}
	}
	cfg.Schedule = train.Schedule{Kind: *f.sched, Base: *f.lr, StepEvery: *f.stepEvery, Gamma: *f.gamma, Epochs: float64(cfg.Epochs), Warmup: *f.warmup}
	cfg.ResetPenultimate = !*f.keepPen
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("train: %w", err)
	}
	cfg.Flags = map[string]string{}
	for _, name := range recordedFlags {
		cfg.Flags[name] = fs.Lookup(name).Value.String()
	}
	cfg.Progress, cfg.Terminal, cfg.Log = os.Stderr, term.IsTerminal(int(os.Stderr.Fd())), log
	return nil
}

// dataset loads --data and the --field folders.
func (f *trainFlags) dataset(cfg train.Config, log *slog.Logger) (*train.Dataset, error) {
	ds, err := train.LoadFolder(cfg.Data, cfg.ValFrac, cfg.Seed)
	if err != nil {
		return nil, err
	}
	for _, s := range ds.Skipped {
		log.Warn("skipping", "file", s)
	}
	if len(f.fields) > 0 {
		info, err := train.AddField(ds, train.FieldOptions{Dirs: f.fields, ValFrac: *f.fieldVal, RejectClass: *f.reject, Seed: cfg.Seed})
		if err != nil {
			return nil, err
		}
		logField(log, info, *f.reject)
	}
	log.Info("dataset", "classes", len(ds.Classes), "train", len(ds.Train), "val", len(ds.Val), "test", len(ds.Test), "skipped", len(ds.Skipped))
	return ds, nil
}

// startModel is a new run's model: --base (or random weights) with a head
// for the dataset's classes, and its optimizer.
func (f *trainFlags) startModel(cfg train.Config, ds *train.Dataset, given map[string]bool, log *slog.Logger) (*model.Model, *train.SGD, error) {
	var src *model.Model
	var err error
	if *f.base != "" {
		if src, err = model.Load(*f.base); err != nil {
			return nil, nil, err
		}
		if given["variant"] && string(src.Spec.Variant) != *f.variant {
			return nil, nil, fmt.Errorf("--base is a %s checkpoint but --variant says %s: drop --variant or import the right weights", src.Spec.Variant, *f.variant)
		}
	} else {
		v, err := model.ParseVariant(*f.variant)
		if err != nil {
			return nil, nil, err
		}
		log.Warn("no --base given: starting from random weights; fine-tuning from ImageNet weights (finetune import) is far better")
		if src, err = model.NewRandom(v, 1000, cfg.Seed); err != nil {
			return nil, nil, err
		}
	}
	m, err := model.ReplaceHead(src, ds.Classes, cfg.ResetPenultimate, rand.New(rand.NewPCG(cfg.Seed, 0x4ead)))
	if err != nil {
		return nil, nil, err
	}
	return m, train.NewSGD(m, float32(cfg.Momentum), float32(cfg.WeightDecay)), nil
}

// printTrainResult says what the run achieved, per source.
func printTrainResult(res *train.Result, best string) {
	fmt.Printf("best epoch %d: val accuracy %.4f, macro-F1 %.4f → %s (manifest beside it; finetune sign adds the signature)\n", res.BestEpoch, res.Best.Accuracy, res.Best.MacroF1, best)
	if f := res.BySource[train.SourceField]; f.Total > 0 {
		fmt.Printf("  plantvillage validation: accuracy %.4f (%d images); field validation: accuracy %.4f (%d samples)\n",
			res.BySource[train.SourceData].Accuracy, res.BySource[train.SourceData].Total, f.Accuracy, f.Total)
	}
	if res.Test.Total > 0 {
		fmt.Printf("  field test (the %d baseline samples of the validation camera-days, kept at random): accuracy %.4f", res.Test.Total, res.Test.Accuracy)
		if res.TestKeptWith >= 0 {
			fmt.Printf(" (the model that kept them: %.4f)", res.TestKeptWith)
		}
		fmt.Println()
	}
}

// evaluation is the run's accuracy per source of images, for the manifest.
func evaluation(res *train.Result) map[string]bundle.Accuracy {
	out := map[string]bundle.Accuracy{}
	add := func(name string, r train.Report) {
		if r.Total > 0 {
			out[name] = bundle.Accuracy{Accuracy: r.Accuracy, Samples: r.Total}
		}
	}
	if res.BySource[train.SourceField].Total > 0 {
		add("plantvillage_val", res.BySource[train.SourceData])
		add("field_val", res.BySource[train.SourceField])
	} else {
		add("val", res.Best)
	}
	add("field_test", res.Test)
	return out
}

// logField says what the field samples became.
func logField(log *slog.Logger, info *train.FieldInfo, reject bool) {
	log.Info("field samples", "records", info.Records, "train", info.Train, "val", info.Val, "test_baseline", info.Test,
		"baseline_labelled", info.Baseline, "split_by", info.SplitBy, "groups", info.Groups, "val_groups", info.ValGroups,
		"unlabelled", info.Unlabelled, "unsure", info.Unsure, "not_a_leaf", info.NotALeaf, "new_classes", info.NewClasses)
	if info.SplitBy == "frame" {
		log.Warn("the field samples come from one camera on one day: they are split by frame, so near-identical views of a leaf may sit on both sides and the field validation flatters; samples from more days or cameras split properly")
	}
	if info.NotALeaf > 0 && !reject {
		log.Warn("samples labelled not_a_leaf are left out; --reject-class trains them as a class of its own", "count", info.NotALeaf)
	}
	if info.Test == 0 && info.Records > 0 {
		log.Warn("no baseline sample (kept at random) on the validation side: there is no honest field test; label baseline samples first (leafwatchd samples list --rule baseline)")
	}
}

// restoreFlags sets every recorded flag not given from the saved run, and
// refuses given ones that contradict it.
func restoreFlags(fs *flag.FlagSet, given map[string]bool, saved map[string]string) error {
	var conflicts []string
	for _, name := range recordedFlags {
		v, ok := saved[name]
		if !ok {
			continue
		}
		f := fs.Lookup(name)
		if given[name] {
			if now := f.Value.String(); now != v && !resumeMayChange[name] && !samePath(name, now, v) {
				conflicts = append(conflicts, fmt.Sprintf("--%s %s (the run has %s)", name, now, v))
			}
			continue
		}
		if err := fs.Set(name, v); err != nil {
			return fmt.Errorf("resume: the state's --%s %q: %w", name, v, err)
		}
	}
	if len(conflicts) > 0 {
		return fmt.Errorf("resume: a resumed run keeps its settings, and these contradict them: %s — drop them to continue the run, or start a new run in another --out", strings.Join(conflicts, ", "))
	}
	return nil
}

func samePath(name, a, b string) bool {
	if name != "base" {
		return false
	}
	aa, err1 := filepath.Abs(a)
	bb, err2 := filepath.Abs(b)
	return err1 == nil && err2 == nil && aa == bb
}

// continueCommand is what to run after an interruption: a resume of the
// saved state, or, when none was saved yet (interrupted while caching
// features), the same command again, which continues the cache.
func continueCommand(args []string, state string) string {
	if state == "" {
		return shellJoin(args)
	}
	return shellJoin([]string{args[0], "train", "--resume", state})
}

func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`*?[]#~;&|<>(){}!") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}
