package train

import (
	"fmt"
	"math"
	"strings"

	"github.com/leafwatch/leafwatch/model"
)

// SGD is stochastic gradient descent with momentum and L2 weight decay,
// Caffe/PyTorch style: v ← μ·v + (g + λ·w); w ← w − lr·mult·v. The decay
// uses the weights (gorgonia's Momentum wrongly uses the velocity), and
// biases are not decayed. Its state is exported so it can be saved.
type SGD struct {
	Momentum    float32
	WeightDecay float32
	// Mult scales the learning rate of a parameter (new layers learn
	// faster); missing names use 1; 0 freezes.
	Mult     map[string]float32
	Velocity map[string][]float32
}

// NewSGD prepares momentum buffers for every parameter.
func NewSGD(m *model.Model, momentum, decay float32) *SGD {
	s := &SGD{Momentum: momentum, WeightDecay: decay, Mult: map[string]float32{}, Velocity: map[string][]float32{}}
	for name, p := range m.Params {
		s.Velocity[name] = make([]float32, len(p.Data))
	}
	return s
}

// Step applies one update with learning rate lr.
func (s *SGD) Step(m *model.Model, grads map[string]*model.Tensor, lr float32) error {
	for name, p := range m.Params {
		mult, ok := s.Mult[name]
		if !ok {
			mult = 1
		}
		if mult == 0 {
			continue
		}
		g, v := grads[name], s.Velocity[name]
		if g == nil || len(v) != len(p.Data) {
			return fmt.Errorf("optimizer: no gradient or state for %s", name)
		}
		decay := s.WeightDecay
		if strings.HasSuffix(name, ".bias") {
			decay = 0
		}
		step := lr * mult
		for i, w := range p.Data {
			vi := s.Momentum*v[i] + g.Data[i] + decay*w
			v[i] = vi
			p.Data[i] = w - step*vi
		}
	}
	return nil
}

// Schedule gives the learning rate at a (fractional) epoch.
type Schedule struct {
	Kind      string  `json:"kind"` // step | cosine | constant
	Base      float64 `json:"base"`
	StepEvery float64 `json:"step_every"` // epochs (step)
	Gamma     float64 `json:"gamma"`      // factor per step (step)
	Epochs    float64 `json:"epochs"`     // total (cosine)
	Warmup    float64 `json:"warmup"`     // epochs of linear warmup
	MinLR     float64 `json:"min_lr"`     // cosine floor
}

// Validate checks the schedule.
func (s Schedule) Validate() error {
	switch s.Kind {
	case "step":
		if !(s.StepEvery > 0) || math.IsInf(s.StepEvery, 0) || !(s.Gamma > 0) || s.Gamma > 1 {
			return fmt.Errorf("step schedule needs step_every > 0 and 0 < gamma ≤ 1")
		}
	case "cosine":
		if !(s.Epochs > 0) || math.IsInf(s.Epochs, 0) {
			return fmt.Errorf("cosine schedule needs the epoch count")
		}
		if !(s.MinLR >= 0) || s.MinLR >= s.Base {
			return fmt.Errorf("cosine floor %v: must be ≥ 0 and below the learning rate %v", s.MinLR, s.Base)
		}
	case "constant":
	default:
		return fmt.Errorf("unknown schedule %q (step, cosine, constant)", s.Kind)
	}
	if !(s.Base > 0) || math.IsInf(s.Base, 0) {
		return fmt.Errorf("learning rate %v: must be a finite number > 0", s.Base)
	}
	if !(s.Warmup >= 0) || math.IsInf(s.Warmup, 0) {
		return fmt.Errorf("warmup %v: must be a finite number of epochs ≥ 0", s.Warmup)
	}
	return nil
}

// At returns the learning rate at epoch e (0-based, fractional).
func (s Schedule) At(e float64) float64 {
	lr := s.Base
	switch s.Kind {
	case "step":
		lr = s.Base * math.Pow(s.Gamma, math.Floor(e/s.StepEvery))
	case "cosine":
		p := math.Min(1, e/s.Epochs)
		lr = s.MinLR + (s.Base-s.MinLR)*0.5*(1+math.Cos(math.Pi*p))
	}
	if s.Warmup > 0 && e < s.Warmup {
		lr *= (e + 1e-3) / s.Warmup
	}
	return lr
}
