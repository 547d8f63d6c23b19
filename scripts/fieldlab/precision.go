package main

import (
	"context"
	"flag"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"

	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/tools/finetune/train"
	"github.com/leafwatch/leafwatch/vision"
)

// cmdPrecision measures the CPU engine's reduced precisions against fp32
// where they are hardest to trust: a model trained on greenhouse samples
// (small margins on shifted data), the regions leafwatchd cuts from
// greenhouse frames, and the kept samples themselves. Every region is
// classified in fp32 and in each reduced precision, as the daemon would
// (train.Predictor), and compared: top-1 agreement and the largest
// probability difference, against the bar of 99.9% and 0.005.
func cmdPrecision(args []string) error {
	fset := flag.NewFlagSet("precision", flag.ExitOnError)
	ckpt := fset.String("model", "", "checkpoint")
	frames := fset.String("frames", "", "folders of greenhouse frames (*.jpg), comma-separated: each cut into leaf regions as leafwatchd does")
	images := fset.String("images", "", "folders of region images (an export's class folders), comma-separated: each classified whole")
	fset.Parse(args)
	m, err := model.Load(*ckpt)
	if err != nil {
		return err
	}
	var sets []precisionSet
	for _, dir := range splitList(*frames) {
		files, _ := filepath.Glob(filepath.Join(dir, "*.jpg"))
		sets = append(sets, precisionSet{name: "leaf regions of " + dir, files: files,
			regions: vision.Regions{Mode: vision.RegionsLeaves, Leaves: vision.DefaultLeaves()}})
	}
	for _, dir := range splitList(*images) {
		files, err := imageFiles(dir)
		if err != nil {
			return err
		}
		sets = append(sets, precisionSet{name: "images of " + dir, files: files})
	}
	if len(sets) == 0 {
		return fmt.Errorf("precision: give --frames or --images")
	}
	fmt.Printf("precision agreement with fp32, %s (%s)\n", *ckpt, m.Meta.Version)
	for _, s := range sets {
		if err := s.measure(context.Background(), m); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return nil
}

type precisionSet struct {
	name    string
	files   []string
	regions vision.Regions
}

// measure classifies the set in every precision and prints one line per
// reduced precision.
func (s precisionSet) measure(ctx context.Context, m *model.Model) error {
	sort.Strings(s.files)
	k := m.Classes()
	probs := map[model.Precision][]float32{}
	for _, p := range []model.Precision{model.FP32, model.FP16, model.BF16, model.INT8} {
		pr, err := train.NewPredictor(m, s.regions, p)
		if err != nil {
			return err
		}
		for _, f := range s.files {
			res, err := pr.Predict(ctx, f, 1)
			if err != nil {
				pr.Close()
				return fmt.Errorf("%s: %w", f, err)
			}
			for _, pred := range res.Preds {
				probs[p] = append(probs[p], pred.Probs...)
			}
		}
		pr.Close()
	}
	ref := probs[model.FP32]
	n := len(ref) / k
	tight := 0
	for i := 0; i < n; i++ {
		top := append([]float32(nil), ref[i*k:(i+1)*k]...)
		sort.Slice(top, func(a, b int) bool { return top[a] > top[b] })
		if top[0]-top[1] < 0.1 {
			tight++
		}
	}
	fmt.Printf("  %s: %d regions from %d files, %d of them with fp32's top two within 0.1\n", s.name, n, len(s.files), tight)
	for _, p := range []model.Precision{model.FP16, model.BF16, model.INT8} {
		if len(probs[p]) != len(ref) {
			return fmt.Errorf("%s cut %d regions, fp32 %d", p, len(probs[p])/k, n)
		}
		agree, worst := train.Agreement(ref, probs[p], k)
		verdict := "meets the bar"
		if 100*float64(agree) < 99.9*float64(n) || worst > 0.005 {
			verdict = "FAILS the bar (99.9%, 0.005)"
		}
		fmt.Printf("    %-4s top-1 agreement %d/%d = %.2f%%, largest probability difference %.4f: %s\n",
			p, agree, n, 100*float64(agree)/float64(n), worst, verdict)
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// imageFiles lists the JPEG and PNG files under dir.
func imageFiles(dir string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch strings.ToLower(filepath.Ext(path)) {
		case ".jpg", ".jpeg", ".png":
			files = append(files, path)
		}
		return nil
	})
	if err == nil && len(files) == 0 {
		err = fmt.Errorf("no images under %s", dir)
	}
	return files, err
}
