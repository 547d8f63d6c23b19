package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/tools/finetune/train"
	"github.com/leafwatch/leafwatch/vision"
)

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
	skipped := append(append([]string(nil), ds.Skipped...), res.Confusion.Skipped...)
	for _, s := range skipped {
		fmt.Fprintln(os.Stderr, "skipped:", s)
	}
	fmt.Printf("accuracy %.4f  macro-F1 %.4f  (%d images evaluated, %d files skipped)\n", res.Best.Accuracy, res.Best.MacroF1, res.Best.Total, len(skipped))
	for _, c := range res.Best.PerClass {
		fmt.Printf("  %-55s P %.3f  R %.3f  F1 %.3f  n=%d\n", c.Class, c.Precision, c.Recall, c.F1, c.Support)
	}
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
	prec := fs.String("precision", "fp32", "the CPU engine's FC weights as leafwatchd's precision: fp32, fp16, bf16 or int8")
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
