// Package engine chooses the engine that runs a model: "auto" (CUDA when
// this binary has it and a device is usable, else the CPU), "cpu" or
// "cuda", for inference and for training. It is the one place that knows
// the engine names; the daemon's config, finetune and gpucheck ask it.
package engine

import (
	"fmt"
	"log/slog"

	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/model/cpu"
	"github.com/leafwatch/leafwatch/model/gpu"
)

// Kinds of engine a user can ask for.
const (
	Auto = "auto"
	CPU  = "cpu"
	CUDA = "cuda"
)

// Validate accepts the engine names ("" means auto).
func Validate(kind string) error {
	switch kind {
	case Auto, CPU, CUDA, "":
		return nil
	}
	return fmt.Errorf("engine %q: use auto, cpu or cuda", kind)
}

// Select returns the inference engine for m: "cpu" always works; "cuda"
// fails with a clear error when the binary has no CUDA or no device is
// usable; "auto" takes CUDA when it can and says why not otherwise.
func Select(m *model.Model, kind string, opt model.Options, log *slog.Logger) (model.Engine, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := Validate(kind); err != nil {
		return nil, err
	}
	if kind == CPU {
		c := cpu.NewClassifier(m, opt)
		log.Info("engine selected", "engine", c.Engine(), "why", "engine: cpu")
		return c, nil
	}
	e, err := gpu.New(m, opt, log)
	if err == nil {
		log.Info("engine selected", "engine", e.Engine(), "why", "CUDA device available")
		return e, nil
	}
	if kind == CUDA {
		return nil, fmt.Errorf("engine cuda: %w", err)
	}
	c := cpu.NewClassifier(m, opt)
	log.Info("engine selected", "engine", c.Engine(), "why", "no CUDA: "+err.Error())
	return c, nil
}

// SelectTrainer returns the CUDA training backend for kind "cuda" or
// "auto" when one can run, or nil when training stays on the CPU (the
// caller's cpu.TrainSession); "cuda" without a device is an error.
func SelectTrainer(m *model.Model, kind string, batch int, opt gpu.OptimSettings, log *slog.Logger) (gpu.TrainStepper, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := Validate(kind); err != nil {
		return nil, err
	}
	if kind == CPU {
		log.Info("engine selected", "engine", "cpu/"+cpu.BLASInfo(), "why", "engine: cpu")
		return nil, nil
	}
	dev, err := gpu.NewTrainer(m, batch, opt)
	switch {
	case err == nil:
		log.Info("engine selected", "engine", dev.Name(), "why", "CUDA device available")
		return dev, nil
	case kind == CUDA:
		return nil, fmt.Errorf("engine cuda: %w", err)
	}
	log.Info("engine selected", "engine", "cpu/"+cpu.BLASInfo(), "why", "no CUDA: "+err.Error())
	return nil, nil
}
