package train

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"github.com/leafwatch/leafwatch/model"
)

// fullConfig is the default recipe users run: every layer trained, random
// crops and mirrors decoded by two workers, dropout on.
func fullConfig(data, out string) Config {
	return Config{Data: data, Seed: 9, Epochs: 2, BatchSize: 4, Momentum: 0.9, WeightDecay: 5e-4, NewLayerLRMult: 10,
		ResetPenultimate: true, Schedule: Schedule{Kind: "step", Base: 1e-4, StepEvery: 10, Gamma: 0.1},
		TrainFrom: "conv1", Workers: 2, Out: out, Log: quiet}
}

// runTo trains a fresh run, or resumes out's state when resume is set, and
// returns the error and the weights and momentum afterwards.
func runTo(t *testing.T, ctx context.Context, cfg Config, ds *Dataset, resume bool) (*Trainer, error) {
	t.Helper()
	var tr *Trainer
	var err error
	if resume {
		m, opt, st, lerr := LoadState(filepath.Join(cfg.Out, "state.safetensors"))
		if lerr != nil {
			t.Fatal(lerr)
		}
		tr, err = NewTrainer(cfg, ds, m, opt, &st)
	} else {
		m := baseModel(t, ds.Classes)
		tr, err = NewTrainer(cfg, ds, m, NewSGD(m, float32(cfg.Momentum), float32(cfg.WeightDecay)), nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	_, err = tr.Run(ctx)
	return tr, err
}

// sameState compares weights and momentum bit for bit.
func sameState(t *testing.T, a, b *Trainer) {
	t.Helper()
	for name, p := range a.m.Params {
		if i := firstDiff(p.Data, b.m.Params[name].Data); i >= 0 {
			t.Fatalf("%s[%d]: uninterrupted %g, resumed %g", name, i, p.Data[i], b.m.Params[name].Data[i])
		}
		if i := firstDiff(a.opt.Velocity[name], b.opt.Velocity[name]); i >= 0 {
			t.Fatalf("momentum of %s[%d] differs", name, i)
		}
	}
}

func firstDiff(a, b []float32) int {
	if len(a) != len(b) {
		return 0
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i
		}
	}
	return -1
}

// TestFullFineTuneResumesExactly: the default recipe (convolutions
// trained, augmentation, dropout, parallel decoding) interrupted inside
// epoch 2 and resumed ends bit-identical to the uninterrupted run.
func TestFullFineTuneResumesExactly(t *testing.T) {
	if testing.Short() {
		t.Skip("full AlexNet training in -short mode")
	}
	data := synthData(t, 3) // 12 images: 8 train (2 batches), 4 val
	ds, err := LoadFolder(data, 0.25, 3)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	a, err := runTo(t, context.Background(), fullConfig(data, t.TempDir()), ds, false)
	if err != nil {
		t.Fatal(err)
	}
	base := baseModel(t, ds.Classes)
	if firstDiff(base.Params["features.0.weight"].Data, a.m.Params["features.0.weight"].Data) < 0 {
		t.Fatal("conv1 did not train")
	}
	cfg := fullConfig(data, t.TempDir())
	cfg.MaxSteps = 3 // epoch 2, after its first batch
	if _, err := runTo(t, context.Background(), cfg, ds, false); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("interrupted run: %v", err)
	}
	cfg.MaxSteps = 0
	b, err := runTo(t, context.Background(), cfg, ds, true)
	if err != nil {
		t.Fatal(err)
	}
	sameState(t, a, b)
	t.Logf("full path: 4 steps + resume identical (%.1fs)", time.Since(start).Seconds())
}

// TestCachedFeaturesResumeAndReuse: the fc6+ path with the on-disk cache.
// A run interrupted while caching keeps what it computed; the rerun
// continues the cache, is interrupted in training, resumes, and ends
// identical to an uninterrupted run. A later run reuses the cache without
// a forward pass; a changed image or a damaged cache file is noticed.
func TestCachedFeaturesResumeAndReuse(t *testing.T) {
	if testing.Short() {
		t.Skip("AlexNet convolutions in -short mode")
	}
	data := synthData(t, 4) // 16 images: 12 train, 4 val
	ds, _ := LoadFolder(data, 0.25, 3)
	fc6 := func(out string) Config {
		c := fullConfig(data, out)
		c.TrainFrom, c.CacheFeatures = "fc6", true
		return c
	}
	a, err := runTo(t, context.Background(), fc6(t.TempDir()), ds, false)
	if err != nil {
		t.Fatal(err)
	}

	cfg := fc6(t.TempDir())
	var logs bytes.Buffer
	cfg.Log = slog.New(slog.NewTextHandler(&logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	afterCacheBatch = func(n int) {
		if n == 2 {
			cancel()
		}
	}
	_, err = runTo(t, ctx, cfg, ds, false)
	afterCacheBatch = nil
	var ie *Interrupted
	if !errors.As(err, &ie) || ie.State != "" || !strings.Contains(err.Error(), "while caching features") {
		t.Fatalf("interrupted while caching: %v", err)
	}
	partial, _ := filepath.Glob(filepath.Join(cfg.Out, "features", "*.partial"))
	if len(partial) != 1 {
		t.Fatalf("partial cache files: %v", partial)
	}
	cfg.MaxSteps = 4 // epoch 2 (3 batches an epoch), after its first batch
	if _, err := runTo(t, context.Background(), cfg, ds, false); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("second run: %v", err)
	}
	if !strings.Contains(logs.String(), "already_done=16") {
		t.Errorf("the rerun did not continue the cache (2 batches of 4 images, centre and mirror = 16 passes):\n%s", logs.String())
	}
	cfg.MaxSteps = 0
	logs.Reset()
	b, err := runTo(t, context.Background(), cfg, ds, true)
	if err != nil {
		t.Fatal(err)
	}
	sameState(t, a, b)
	if !strings.Contains(logs.String(), "reusing cached features") || strings.Contains(logs.String(), "computing") {
		t.Errorf("resume did not reuse the cache:\n%s", logs.String())
	}

	// A changed image invalidates the cache; a damaged one is rebuilt.
	bins, _ := filepath.Glob(filepath.Join(cfg.Out, "features", "*.bin"))
	if len(bins) != 1 {
		t.Fatalf("cache files %v", bins)
	}
	os.Truncate(bins[0], 1000)
	logs.Reset()
	cfg.Epochs = 3
	if _, err := runTo(t, context.Background(), cfg, ds, true); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "cached features unusable") {
		t.Errorf("a cut cache file was not noticed:\n%s", logs.String())
	}
	later := time.Now().Add(time.Hour)
	os.Chtimes(ds.Train[0].Path, later, later)
	logs.Reset()
	cfg.Epochs = 4
	if _, err := runTo(t, context.Background(), cfg, ds, true); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "removing cached features made for other") || !strings.Contains(logs.String(), "forward_passes=28") {
		t.Errorf("a changed image did not rebuild the cache:\n%s", logs.String())
	}
}

// TestExtendingACosineRunKeepsLearning: --epochs 4 on a finished 2-epoch
// cosine run re-draws the curve over 4 epochs; it used to train at lr 0.
func TestExtendingACosineRunKeepsLearning(t *testing.T) {
	data := synthData(t, 6)
	ds, _ := LoadFolder(data, 0.25, 3)
	cfg := cachedConfig(data, t.TempDir())
	cfg.Epochs = 2
	cfg.Schedule = Schedule{Kind: "cosine", Base: 1e-4, Epochs: 2}
	first, err := runTo(t, context.Background(), cfg, ds, false)
	if err != nil {
		t.Fatal(err)
	}
	before := append([]float32(nil), first.m.Params["classifier.6.weight"].Data...)
	cfg.Epochs = 4
	ext, err := runTo(t, context.Background(), cfg, ds, true)
	if err != nil {
		t.Fatal(err)
	}
	h := ext.st.History
	if len(h) != 4 {
		t.Fatalf("%d epochs in the history", len(h))
	}
	if want := 0.5e-4; math.Abs(h[2].LR-want) > 1e-9 || h[3].LR <= 0 || h[3].LR >= h[2].LR {
		t.Errorf("extended learning rates %g, %g; want %g then lower but above 0", h[2].LR, h[3].LR, want)
	}
	if h[0].LR != 1e-4 || math.Abs(h[1].LR-0.5e-4) > 1e-9 {
		t.Errorf("the history's first epochs changed: %g %g", h[0].LR, h[1].LR)
	}
	if firstDiff(before, ext.m.Params["classifier.6.weight"].Data) < 0 {
		t.Error("the extended epochs did not change the weights")
	}
}

func TestConfigRefusesNonsense(t *testing.T) {
	ok := cachedConfig("d", "o")
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Config){
		"lr Inf":          func(c *Config) { c.Schedule.Base = math.Inf(1) },
		"lr NaN":          func(c *Config) { c.Schedule.Base = math.NaN() },
		"lr 0":            func(c *Config) { c.Schedule.Base = 0 },
		"lr negative":     func(c *Config) { c.Schedule.Base = -0.1 },
		"gamma NaN":       func(c *Config) { c.Schedule.Gamma = math.NaN() },
		"warmup Inf":      func(c *Config) { c.Schedule.Warmup = math.Inf(1) },
		"momentum 1":      func(c *Config) { c.Momentum = 1 },
		"decay Inf":       func(c *Config) { c.WeightDecay = math.Inf(1) },
		"lr mult NaN":     func(c *Config) { c.NewLayerLRMult = math.NaN() },
		"batch 0":         func(c *Config) { c.BatchSize = 0 },
		"cosine no floor": func(c *Config) { c.Schedule = Schedule{Kind: "cosine", Base: 0.1, Epochs: 3, MinLR: 0.2} },
	} {
		c := ok
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

// TestTruncatedStateSaysSo: a state file cut while copied is reported as
// cut short, not as a foreign file.
func TestTruncatedStateSaysSo(t *testing.T) {
	m := baseModel(t, testClasses)
	p := filepath.Join(t.TempDir(), "state.safetensors")
	if err := SaveState(p, m, NewSGD(m, 0.9, 0), State{Seed: 1}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	for _, n := range []int{4, 100, len(b) / 2, len(b) - 1} {
		os.WriteFile(p, b[:n], 0o644)
		if _, _, _, err := LoadState(p); err == nil || !strings.Contains(err.Error(), "cut short") {
			t.Errorf("cut at %d: %v", n, err)
		}
	}
	os.WriteFile(p, []byte("hello, not a state file at all"), 0o644)
	if _, _, _, err := LoadState(p); err == nil || !strings.Contains(err.Error(), "not a training-state file") {
		t.Errorf("foreign file: %v", err)
	}
}

// TestDatasetListsEverythingItLeavesOut: non-image files, empty files,
// truncated images and tiny ones are listed with the reason; BMP counts.
func TestDatasetListsEverythingItLeavesOut(t *testing.T) {
	dir := synthData(t, 3)
	cls := filepath.Join(dir, testClasses[0])
	des, _ := os.ReadDir(cls)
	jpg, _ := os.ReadFile(filepath.Join(cls, des[0].Name()))
	img, err := PrepareFile(filepath.Join(cls, des[0].Name()), Augment{Prep: PreprocessOf(model.DefaultMetadata(model.TorchVision))}, nil)
	if err != nil || len(img) != 3*224*224 {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(cls, "notes.txt"), []byte("watered on Monday"), 0o644)
	os.WriteFile(filepath.Join(cls, "empty.jpg"), nil, 0o644)
	os.WriteFile(filepath.Join(cls, "half.jpg"), jpg[:len(jpg)/2], 0o644)
	writeBMP(t, filepath.Join(dir, testClasses[1], "scan.bmp"))
	ds, err := LoadFolder(dir, 0.25, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"notes.txt": "not an image file", "empty.jpg": "empty", "half.jpg": "truncated JPEG"}
	if len(ds.Skipped) != len(want) {
		t.Errorf("skipped %q", ds.Skipped)
	}
	for file, reason := range want {
		found := false
		for _, s := range ds.Skipped {
			found = found || (strings.Contains(s, file) && strings.Contains(s, reason))
		}
		if !found {
			t.Errorf("%s not skipped with %q: %q", file, reason, ds.Skipped)
		}
	}
	found := false
	for _, s := range append(ds.Train, ds.Val...) {
		found = found || strings.HasSuffix(s.Path, "scan.bmp")
	}
	if !found {
		t.Error("the BMP was not taken")
	}
}

func writeBMP(t *testing.T, path string) {
	t.Helper()
	m := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(40, 160, 60, 0), 300, 401, gocv.MatTypeCV8UC3)
	defer m.Close()
	if !gocv.IMWrite(path, m) {
		t.Fatal("cannot write a BMP")
	}
}
