package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/leafwatch/leafwatch/internal/fieldset"
	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/tools/finetune/train"
	"github.com/leafwatch/leafwatch/vision"
)

func cmdEval(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("eval", flag.ExitOnError)
	ckpt := fs.String("model", "", "checkpoint")
	data := fs.String("data", "", "image folder (its val/ part, or a seeded split; every image with --val 1), or a device's export (every labelled sample)")
	out := fs.String("out", "", "folder for confusion.csv, report.csv, confusion.png")
	valFrac := fs.Float64("val", 0.2, "validation fraction when DATA has no train/ and val/; 1 evaluates every image (a test folder)")
	seed := fs.Uint64("seed", 1, "split seed (use the training run's)")
	fs.Parse(args)
	if *ckpt == "" || *data == "" || *out == "" {
		return errors.New("eval: --model, --data and --out are required")
	}
	m, err := model.Load(*ckpt)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return fmt.Errorf("output folder %s: %w", *out, err)
	}
	if fieldset.IsExport(*data) {
		return evalExport(ctx, m, *data, *out)
	}
	var ds *train.Dataset
	if *valFrac == 1 {
		// A test folder: every image is evaluated.
		if ds, err = train.LoadFolder(*data, 0.5, *seed); err == nil {
			ds.Test, ds.Val = append(ds.Train, ds.Val...), nil
			ds.Train = nil
		}
	} else {
		ds, err = train.LoadFolder(*data, *valFrac, *seed)
	}
	if err != nil {
		return err
	}
	if strings.Join(ds.Classes, "\n") != strings.Join(m.Meta.Labels, "\n") {
		return fmt.Errorf("the dataset's classes (%d) are not the checkpoint's labels (%d) in the same order", len(ds.Classes), len(m.Meta.Labels))
	}
	res, err := train.WriteReports(ctx, *out, m, ds, 16, 2)
	if err != nil {
		return err
	}
	rep, conf := res.Best, res.Confusion
	if *valFrac == 1 {
		rep, conf = res.Test, res.TestConfusion
	}
	skipped := append(append([]string(nil), ds.Skipped...), conf.Skipped...)
	for _, s := range skipped {
		fmt.Fprintln(os.Stderr, "skipped:", s)
	}
	fmt.Printf("accuracy %.4f  macro-F1 %.4f  (%d images evaluated, %d files skipped)\n", rep.Accuracy, rep.MacroF1, rep.Total, len(skipped))
	printClasses(rep)
	return nil
}

func printClasses(rep train.Report) {
	for _, c := range rep.PerClass {
		if c.Support == 0 && c.Precision == 0 {
			continue
		}
		fmt.Printf("  %-55s P %.3f  R %.3f  F1 %.3f  n=%d\n", c.Class, c.Precision, c.Recall, c.F1, c.Support)
	}
}

// evalExport evaluates every labelled sample of a device's export (a
// greenhouse's own test set) and compares with the answers the model that
// kept them gave, from the records: "this greenhouse: 41% → 78%".
func evalExport(ctx context.Context, m *model.Model, dir, out string) error {
	ds, foreign, err := train.LoadExport(dir, m.Meta.Labels)
	if err != nil {
		return err
	}
	for _, f := range foreign {
		fmt.Fprintln(os.Stderr, "not a class of this model, left out:", f)
	}
	res, err := train.WriteReports(ctx, out, m, ds, 16, 2)
	if err != nil {
		return err
	}
	for _, s := range res.TestConfusion.Skipped {
		fmt.Fprintln(os.Stderr, "skipped:", s)
	}
	rep := res.Test
	fmt.Printf("this greenhouse (%s): accuracy %.4f, macro-F1 %.4f on %d labelled samples", dir, rep.Accuracy, rep.MacroF1, rep.Total)
	if res.TestKeptWith >= 0 {
		fmt.Printf("; the model that kept them: %.4f (%s → %s: %.0f%% → %.0f%%)", res.TestKeptWith, "kept-with", m.Meta.Version, 100*res.TestKeptWith, 100*rep.Accuracy)
	}
	fmt.Println()
	var base []train.Sample
	for _, s := range ds.Test {
		if s.Baseline {
			base = append(base, s)
		}
	}
	if len(base) > 0 {
		b := *ds
		b.Test = base
		br, err := train.WriteReports(ctx, "", m, &b, 16, 2)
		if err == nil {
			fmt.Printf("  baseline samples only (kept at random: the honest estimate): accuracy %.4f on %d", br.Test.Accuracy, br.Test.Total)
			if br.TestKeptWith >= 0 {
				fmt.Printf("; the model that kept them: %.4f", br.TestKeptWith)
			}
			fmt.Println()
		}
	} else {
		fmt.Println("  no baseline sample is labelled: the figures above are on samples kept because the model struggled, not an estimate of its everyday accuracy")
	}
	printClasses(rep)
	return nil
}

func cmdPredict(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("predict", flag.ExitOnError)
	ckpt := fs.String("model", "", "checkpoint")
	top := fs.Int("top", 3, "classes to show per image (or region)")
	var tiling vision.Tiling
	fs.IntVar(&tiling.Rows, "tile-rows", 0, "split each image into this many rows of tiles, as a camera's tiling does")
	fs.IntVar(&tiling.Cols, "tile-cols", 0, "columns of tiles")
	fs.Float64Var(&tiling.Overlap, "tile-overlap", 0, "fraction of a tile shared with its neighbour (0..0.9)")
	fs.BoolVar(&tiling.Full, "tile-full", false, "also classify the whole image, as the first region")
	regions := fs.String("regions", "tiles", "leaves (find the leaves and classify each, as a camera with regions: leaves; falls back to the tiling) or tiles")
	leaves := vision.DefaultLeaves()
	fs.IntVar(&leaves.MaxRegions, "leaves-max", leaves.MaxRegions, "leaves: at most this many per image, largest first")
	fs.BoolVar(&leaves.Full, "leaves-full", false, "leaves: also classify the whole image, as the first region")
	prec := fs.String("precision", string(model.DefaultPrecision), "the CPU engine's FC weights, as leafwatchd's precision: fp16 (leafwatchd's default too), fp32, bf16 or int8")
	fs.Parse(args)
	if *ckpt == "" || fs.NArg() == 0 {
		return errors.New("predict: --model and at least one image are required")
	}
	// Checked before the model loads (seconds, 229 MB).
	precision, err := model.ParsePrecision(*prec)
	if err != nil {
		return fmt.Errorf("predict: --precision: %w", err)
	}
	if *top < 1 {
		return fmt.Errorf("predict: --top %d: must be at least 1", *top)
	}
	m, err := model.Load(*ckpt)
	if err != nil {
		return err
	}
	p, err := train.NewPredictor(m, vision.Regions{Mode: *regions, Tiling: tiling, Leaves: leaves}, precision)
	if err != nil {
		return fmt.Errorf("predict: %w", err)
	}
	defer p.Close()
	return predictFiles(ctx, os.Stdout, os.Stderr, p, fs.Args(), min(*top, m.Spec.Classes))
}

// predictFiles prints each file's regions and their top classes; a file
// that cannot be read is reported once, by name, and the rest go on.
func predictFiles(ctx context.Context, out, errs io.Writer, p *train.Predictor, files []string, top int) error {
	failed := 0
	for _, f := range files {
		res, err := p.Predict(ctx, f, top)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			fmt.Fprintf(errs, "%s: %v\n", f, err)
			failed++
			continue
		}
		fmt.Fprintln(out, f)
		if res.Fallback != "" {
			fmt.Fprintf(out, "  (no leaves: %s; the tiling or the whole image instead)\n", res.Fallback)
		}
		for i, pr := range res.Preds {
			indent := "  "
			if len(res.Boxes) > 1 || res.Kinds[i] == vision.KindLeaf {
				b := res.Boxes[i]
				fmt.Fprintf(out, "  region %d %s [%d,%d,%d,%d]\n", i, res.Kinds[i], b.Min.X, b.Min.Y, b.Max.X, b.Max.Y)
				indent = "    "
			}
			for _, s := range pr.Top {
				fmt.Fprintf(out, "%s%6.2f%%  %s\n", indent, s.Prob*100, model.DisplayLabel(s.Label))
			}
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d images could not be read", failed, len(files))
	}
	return nil
}
