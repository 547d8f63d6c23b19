package gpu

import (
	"fmt"
	"log/slog"
	"math/rand/v2"

	"github.com/leafwatch/leafwatch/model"
)

// Kinds of engine a user can ask for.
const (
	Auto = "auto"
	CPU  = "cpu"
	CUDA = "cuda"
)

// Select returns the engine for m: "cpu" always works; "cuda" fails with a
// clear error when the binary has no CUDA or no device is usable; "auto"
// takes CUDA when it can and says why not otherwise.
func Select(m *model.Model, kind string, opt model.Options, log *slog.Logger) (model.Engine, error) {
	if log == nil {
		log = slog.Default()
	}
	switch kind {
	case CPU:
		c := model.NewClassifier(m, opt)
		log.Info("engine selected", "engine", c.Engine(), "why", "engine: cpu")
		return c, nil
	case CUDA, Auto, "":
	default:
		return nil, fmt.Errorf("engine %q: use auto, cpu or cuda", kind)
	}
	e, err := newCUDAWhole(m, opt, log)
	if err == nil {
		log.Info("engine selected", "engine", e.Engine(), "why", "CUDA device available")
		return e, nil
	}
	if kind == CUDA {
		return nil, fmt.Errorf("engine cuda: %w", err)
	}
	c := model.NewClassifier(m, opt)
	log.Info("engine selected", "engine", c.Engine(), "why", "no CUDA: "+err.Error())
	return c, nil
}

// newCUDAWhole is newCUDA for a model that still has every fp32 weight
// (the device copies them all).
func newCUDAWhole(m *model.Model, opt model.Options, log *slog.Logger) (model.Engine, error) {
	if err := m.Whole("CUDA engine"); err != nil {
		return nil, err
	}
	return newCUDA(m, opt, log)
}

// Available reports whether this binary has CUDA and a device is usable,
// with the reason when not.
func Available() (bool, string) { return available() }

// OptimSettings are the SGD settings and state a device trainer starts from.
type OptimSettings struct {
	Momentum    float32
	WeightDecay float32
	Mult        map[string]float32   // learning-rate multiplier per parameter; 0 freezes
	Velocity    map[string][]float32 // momentum to resume from (may be empty)
	Log         *slog.Logger         // where the device and libraries are reported
}

// TrainStepper is a training backend: forward, backward and the optimizer
// step for one batch. The CPU backend lives in the train package; the CUDA
// one here.
type TrainStepper interface {
	// Step trains on one batch entering at layer from; layers before first
	// are frozen. rng draws the dropout masks.
	Step(from int, x []float32, labels []int, first int, lr float32, rng *rand.Rand) (loss float64, correct int, err error)
	Logits(from int, x []float32, n int) ([]float32, error)
	Features(x []float32, n, to int) ([]float32, error)
	// Sync writes the current weights into the model and momentum into
	// velocity (before checkpoints are saved).
	Sync(velocity map[string][]float32) error
	Name() string
	Close() error
}

// NewTrainer starts a CUDA training backend for m.
func NewTrainer(m *model.Model, batch int, opt OptimSettings) (TrainStepper, error) {
	if err := m.Whole("CUDA trainer"); err != nil {
		return nil, err
	}
	return newTrainer(m, batch, opt)
}
