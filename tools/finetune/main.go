// Command finetune turns an ImageNet-trained AlexNet into a Leafwatch model:
// it replaces the last layer by one sized for the dataset, resets the
// penultimate layer, and resumes training. Subcommands: synth, import,
// train, eval, predict.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/term"

	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/model/gpu"
	"github.com/leafwatch/leafwatch/tools/finetune/train"
)

const usage = `finetune — make and remake the Leafwatch leaf-disease model

usage:
  finetune synth   --out DIR [--per-class N] [--seed S]        draw synthetic PlantVillage-like leaves
  finetune import  --from WEIGHTS.{onnx,safetensors} [--variant V] --out CKPT   ImageNet weights → checkpoint
  finetune export  --model CKPT --out MODEL.onnx                 checkpoint → ONNX (TensorRT, onnxruntime, OpenCV DNN)
  finetune train   --data DIR --out DIR [--base CKPT] [options]  fine-tune (see finetune train -h)
  finetune eval    --model CKPT --data DIR --out DIR            accuracy, macro-F1, confusion matrix
  finetune predict --model CKPT [--top K] IMAGE...               classify image files
`

func main() {
	model.TuneBLAS() // may re-exec with OPENBLAS_CORETYPE set
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	slog.SetDefault(log)
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "synth":
		err = cmdSynth(os.Args[2:])
	case "import":
		err = cmdImport(os.Args[2:])
	case "train":
		err = cmdTrain(ctx, os.Args[2:], log)
	case "eval":
		err = cmdEval(ctx, os.Args[2:])
	case "predict":
		err = cmdPredict(ctx, os.Args[2:])
	case "export":
		err = cmdExport(os.Args[2:])
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	default:
		err = fmt.Errorf("unknown subcommand %q\n%s", os.Args[1], usage)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "finetune:", err)
		if errors.Is(err, train.ErrInterrupted) {
			os.Exit(130)
		}
		os.Exit(1)
	}
}

func cmdSynth(args []string) error {
	fs := flag.NewFlagSet("synth", flag.ExitOnError)
	out := fs.String("out", "", "folder to write <class>/*.jpg into")
	per := fs.Int("per-class", 20, "images per class")
	seed := fs.Uint64("seed", 1, "random seed (same seed, same images)")
	classes := fs.Int("classes", 38, "how many PlantVillage classes (the first N)")
	fs.Parse(args)
	if *out == "" {
		return errors.New("synth: --out is required")
	}
	labels := model.PlantVillageLabels()
	if *classes < 2 || *classes > len(labels) {
		return fmt.Errorf("synth: --classes must be 2..%d", len(labels))
	}
	return train.WriteSynth(*out, labels[:*classes], *per, *seed)
}

func cmdImport(args []string) error {
	fs := flag.NewFlagSet("import", flag.ExitOnError)
	from := fs.String("from", "", "ONNX AlexNet (torchvision export or BVLC model zoo), or a torchvision state dict saved with safetensors")
	variant := fs.String("variant", "torchvision", "for state dicts: torchvision or bvlc (ONNX files are recognised)")
	labelsFile := fs.String("labels", "", "optional file with one class label per line")
	out := fs.String("out", "", "checkpoint to write")
	fs.Parse(args)
	if *from == "" || *out == "" {
		return errors.New("import: --from and --out are required")
	}
	v, err := model.ParseVariant(*variant)
	if err != nil {
		return err
	}
	var labels []string
	if *labelsFile != "" {
		b, err := os.ReadFile(*labelsFile)
		if err != nil {
			return err
		}
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			labels = append(labels, strings.TrimSpace(l))
		}
	}
	var m *model.Model
	if strings.EqualFold(filepath.Ext(*from), ".onnx") {
		m, err = model.ImportONNX(*from)
		if err == nil && labels != nil {
			if len(labels) != m.Spec.Classes {
				return fmt.Errorf("import: %d labels for a %d-way model", len(labels), m.Spec.Classes)
			}
			m.Meta.Labels = labels
		}
	} else {
		m, err = model.ImportStateDict(*from, v, labels)
	}
	if err != nil {
		return err
	}
	if err := m.Save(*out); err != nil {
		return err
	}
	fmt.Printf("wrote %s: %s AlexNet, %d classes, version %s\n", *out, m.Spec.Variant, m.Spec.Classes, m.Meta.Version)
	return nil
}

func cmdTrain(ctx context.Context, args []string, log *slog.Logger) error {
	fs := flag.NewFlagSet("train", flag.ExitOnError)
	var cfg train.Config
	fs.StringVar(&cfg.Data, "data", "", "image folder: one sub-folder per class, or train/ and val/")
	fs.StringVar(&cfg.Out, "out", "", "output folder (checkpoints, logs, reports)")
	base := fs.String("base", "", "checkpoint with ImageNet weights (from finetune import); empty = random initialisation")
	variant := fs.String("variant", "torchvision", "variant for random initialisation (torchvision, bvlc)")
	resume := fs.String("resume", "", "training-state file to continue (OUT/state.safetensors)")
	keepPen := fs.Bool("keep-penultimate", false, "keep fc7's weights (the PlantVillage paper) instead of resetting them")
	fs.Float64Var(&cfg.ValFrac, "val", 0.2, "validation fraction when DATA has no train/ and val/")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "random seed: same seed, same run")
	fs.IntVar(&cfg.Epochs, "epochs", 30, "epochs")
	fs.IntVar(&cfg.BatchSize, "batch", 16, "batch size")
	sched := fs.String("schedule", "step", "learning-rate schedule: step, cosine, constant")
	lr := fs.Float64("lr", 0.005, "base learning rate")
	stepEvery := fs.Float64("step-every", 10, "step schedule: epochs between drops")
	gamma := fs.Float64("gamma", 0.1, "step schedule: factor per drop")
	warmup := fs.Float64("warmup", 0, "epochs of linear warmup")
	fs.Float64Var(&cfg.Momentum, "momentum", 0.9, "SGD momentum")
	fs.Float64Var(&cfg.WeightDecay, "weight-decay", 5e-4, "L2 weight decay (weights only, not biases)")
	fs.Float64Var(&cfg.NewLayerLRMult, "new-layer-lr-mult", 10, "learning-rate multiplier for the replaced layers")
	fs.StringVar(&cfg.TrainFrom, "train-from", "conv1", "first trained layer group; earlier groups are frozen (conv1..conv5, fc6, fc7, fc8)")
	fs.BoolVar(&cfg.CacheFeatures, "cache-features", false, "compute frozen layers once (needs --train-from fc6 or later; mirror is the only augmentation)")
	fs.BoolVar(&cfg.Balanced, "balanced", false, "class-balanced sampling")
	fs.IntVar(&cfg.Patience, "patience", 0, "stop after this many epochs without a better val macro-F1 (0 = never)")
	fs.IntVar(&cfg.Workers, "workers", 2, "image decoding goroutines")
	engine := fs.String("engine", "auto", "auto (CUDA when built with it and a GPU is present), cpu or cuda")
	cudaLibs := fs.String("cuda-libs", "", "folders (colon-separated) to take cuBLAS and NVRTC from; default: the newest CUDA the driver runs, searched")
	fs.Parse(args)
	cfg.Engine = *engine
	if *cudaLibs != "" {
		gpu.SetLibraryDirs(strings.Split(*cudaLibs, ":"))
	}
	if cfg.Data == "" || cfg.Out == "" {
		return errors.New("train: --data and --out are required")
	}
	cfg.Schedule = train.Schedule{Kind: *sched, Base: *lr, StepEvery: *stepEvery, Gamma: *gamma, Epochs: float64(cfg.Epochs), Warmup: *warmup}
	cfg.ResetPenultimate = !*keepPen
	cfg.Progress, cfg.Terminal, cfg.Log = os.Stderr, term.IsTerminal(int(os.Stderr.Fd())), log
	ds, err := train.LoadFolder(cfg.Data, cfg.ValFrac, cfg.Seed)
	if err != nil {
		return err
	}
	for _, s := range ds.Skipped {
		log.Warn("skipping unreadable image", "detail", s)
	}
	log.Info("dataset", "classes", len(ds.Classes), "train", len(ds.Train), "val", len(ds.Val), "skipped", len(ds.Skipped))
	var (
		m   *model.Model
		opt *train.SGD
		st  *train.State
	)
	if *resume != "" {
		mm, o, s, err := train.LoadState(*resume)
		if err != nil {
			return err
		}
		m, opt, st = mm, o, &s
		log.Info("resuming", "epoch", s.Epoch+1, "step", s.Step)
	} else {
		var src *model.Model
		if *base != "" {
			if src, err = model.Load(*base); err != nil {
				return err
			}
			if *variant != "" && fs.Lookup("variant").Value.String() != "torchvision" && string(src.Spec.Variant) != *variant {
				return fmt.Errorf("--base is a %s checkpoint but --variant says %s: drop --variant or import the right weights", src.Spec.Variant, *variant)
			}
		} else {
			v, err := model.ParseVariant(*variant)
			if err != nil {
				return err
			}
			log.Warn("no --base given: starting from random weights; fine-tuning from ImageNet weights (finetune import) is far better")
			if src, err = model.NewRandom(v, 1000, cfg.Seed); err != nil {
				return err
			}
		}
		if m, err = model.ReplaceHead(src, ds.Classes, cfg.ResetPenultimate, rand.New(rand.NewPCG(cfg.Seed, 0x4ead))); err != nil {
			return err
		}
		opt = train.NewSGD(m, float32(cfg.Momentum), float32(cfg.WeightDecay))
	}
	tr, err := train.NewTrainer(cfg, ds, m, opt, st)
	if err != nil {
		return err
	}
	defer tr.Close()
	res, err := tr.Run(ctx)
	if err != nil {
		if errors.Is(err, train.ErrInterrupted) {
			return fmt.Errorf("%w: finetune train ... --resume %s", err, filepath.Join(cfg.Out, "state.safetensors"))
		}
		return err
	}
	fmt.Printf("best epoch %d: val accuracy %.4f, macro-F1 %.4f → %s\n", res.BestEpoch, res.Best.Accuracy, res.Best.MacroF1, filepath.Join(cfg.Out, "best.safetensors"))
	return nil
}

func cmdEval(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("eval", flag.ExitOnError)
	ckpt := fs.String("model", "", "checkpoint")
	data := fs.String("data", "", "image folder (its val/ part, or a seeded split)")
	out := fs.String("out", "", "folder for confusion.csv, report.csv, confusion.png")
	valFrac := fs.Float64("val", 0.2, "validation fraction when DATA has no train/ and val/")
	seed := fs.Uint64("seed", 1, "split seed (use the training run's)")
	fs.Parse(args)
	if *ckpt == "" || *data == "" || *out == "" {
		return errors.New("eval: --model, --data and --out are required")
	}
	m, err := model.Load(*ckpt)
	if err != nil {
		return err
	}
	ds, err := train.LoadFolder(*data, *valFrac, *seed)
	if err != nil {
		return err
	}
	if strings.Join(ds.Classes, "\n") != strings.Join(m.Meta.Labels, "\n") {
		return fmt.Errorf("the dataset's classes (%d) are not the checkpoint's labels (%d) in the same order", len(ds.Classes), len(m.Meta.Labels))
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return fmt.Errorf("output folder %s: %w", *out, err)
	}
	res, err := train.WriteReports(ctx, *out, m, ds, 16, 2)
	if err != nil {
		return err
	}
	fmt.Printf("accuracy %.4f  macro-F1 %.4f  (%d images)\n", res.Best.Accuracy, res.Best.MacroF1, res.Best.Total)
	for _, c := range res.Best.PerClass {
		fmt.Printf("  %-55s P %.3f  R %.3f  F1 %.3f  n=%d\n", c.Class, c.Precision, c.Recall, c.F1, c.Support)
	}
	return nil
}

func cmdPredict(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("predict", flag.ExitOnError)
	ckpt := fs.String("model", "", "checkpoint")
	top := fs.Int("top", 3, "classes to show per image")
	fs.Parse(args)
	if *ckpt == "" || fs.NArg() == 0 {
		return errors.New("predict: --model and at least one image are required")
	}
	m, err := model.Load(*ckpt)
	if err != nil {
		return err
	}
	c := model.NewClassifier(m, model.Options{MaxBatch: 1})
	x := make([]float32, m.InputLen())
	a := train.Augment{Resize: max(m.Meta.Resize, m.Meta.InputSize), Crop: m.Meta.InputSize, Mean: m.Meta.Mean, Std: m.Meta.Std}
	failed := 0
	for _, p := range fs.Args() {
		if err := train.LoadImage(p, a, x); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", p, err)
			failed++
			continue
		}
		preds, err := c.Classify(ctx, x, 1, *top)
		if err != nil {
			return err
		}
		fmt.Println(p)
		for _, s := range preds[0].Top {
			fmt.Printf("  %6.2f%%  %s\n", s.Prob*100, model.DisplayLabel(s.Label))
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d images could not be read", failed, fs.NArg())
	}
	return nil
}

func cmdExport(args []string) error {
	fs := flag.NewFlagSet("export", flag.ExitOnError)
	ckpt := fs.String("model", "", "checkpoint")
	out := fs.String("out", "", "ONNX file to write")
	fs.Parse(args)
	if *ckpt == "" || *out == "" {
		return errors.New("export: --model and --out are required")
	}
	m, err := model.Load(*ckpt)
	if err != nil {
		return err
	}
	if err := m.SaveONNX(*out); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	fmt.Printf("wrote %s: opset 13, input \"input\" [batch,3,%d,%d], output \"probabilities\" [batch,%d]\n", *out, m.Spec.InputSize, m.Spec.InputSize, m.Spec.Classes)
	return nil
}
