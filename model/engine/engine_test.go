package engine

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/model/gpu"
)

func TestSelect(t *testing.T) {
	m, err := model.NewRandom(model.TorchVision, 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	cpu, err := Select(m, CPU, model.Options{}, log)
	if err != nil || !strings.HasPrefix(cpu.Engine(), "cpu/") {
		t.Fatalf("cpu: %v %v", cpu, err)
	}
	ok, why := gpu.Available()
	auto, err := Select(m, Auto, model.Options{}, log)
	if err != nil {
		t.Fatal(err)
	}
	if ok != strings.HasPrefix(auto.Engine(), "cuda/") {
		t.Errorf("auto picked %s with CUDA available=%v", auto.Engine(), ok)
	}
	if !strings.Contains(logs.String(), "why=") {
		t.Error("selection is not logged with a reason")
	}
	_, err = Select(m, CUDA, model.Options{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if ok && err != nil {
		t.Errorf("cuda with a device: %v", err)
	}
	if !ok && (err == nil || !strings.Contains(err.Error(), strings.SplitN(why, ":", 2)[0])) {
		t.Errorf("cuda without a device: %v (why: %s)", err, why)
	}
	if _, err := Select(m, "tpu", model.Options{}, log); err == nil {
		t.Error("unknown engine accepted")
	}
	if _, err := SelectTrainer(m, "tpu", 1, gpu.OptimSettings{}, log); err == nil {
		t.Error("unknown training engine accepted")
	}
	if dev, err := SelectTrainer(m, CPU, 1, gpu.OptimSettings{}, log); dev != nil || err != nil {
		t.Errorf("cpu training: %v %v", dev, err)
	}
	probs := make([]float32, 3)
	if err := auto.Probabilities(context.Background(), make([]float32, m.InputLen()), 1, probs); err != nil {
		t.Fatal(err)
	}
}
