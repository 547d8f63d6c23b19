package gpu

import (
	"log/slog"
	"math/rand/v2"

	"github.com/leafwatch/leafwatch/model"
)

// New starts the CUDA inference engine for m, which must still have every
// fp32 weight (the device copies them all). With opt.Precision fp16 the
// convolutions and all fully connected layers but the last keep their
// weights on the device in fp16 and run as fp16 GEMMs with fp32 sums,
// where the GPU has fp16 arithmetic (5.3 or newer; otherwise fp32, and a
// warning says why); any other precision is fp32. Choosing between it and
// the CPU is package engine's.
func New(m *model.Model, opt model.Options, log *slog.Logger) (model.Engine, error) {
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
