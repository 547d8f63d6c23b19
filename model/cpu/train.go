package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/leafwatch/leafwatch/model"
)

// TrainSession runs forward and backward passes over a model for training.
// It owns activation and gradient buffers for one batch size; the optimizer
// (in the finetune package) reads Grads and updates Model.Params.
type TrainSession struct {
	m     *model.Model
	r     *runner
	Grads map[string]*model.Tensor
	dlog  []float32
	probs []float32
}

// NewTrainSession prepares training batches of up to batch images. rng
// drives dropout; pass a seeded one for repeatable runs. It panics on a
// model whose weights were released (see Model.Whole): a programming error.
func NewTrainSession(m *model.Model, batch int, rng *rand.Rand) *TrainSession {
	if err := m.Whole("train"); err != nil {
		panic(err)
	}
	s := &TrainSession{m: m, r: newRunner(m, batch, true, rng), Grads: map[string]*model.Tensor{},
		dlog: make([]float32, batch*m.Spec.Classes), probs: make([]float32, batch*m.Spec.Classes)}
	for name, t := range m.Params {
		s.Grads[name] = model.NewTensor(t.Shape...)
	}
	return s
}

// ZeroGrad clears the accumulated gradients.
func (s *TrainSession) ZeroGrad() {
	for _, g := range s.Grads {
		clear(g.Data)
	}
}

// SetRand replaces the dropout random source (used when resuming).
func (s *TrainSession) SetRand(rng *rand.Rand) { s.r.rng = rng }

// Step runs one batch: forward with dropout, mean softmax cross-entropy
// against labels, and backward, adding gradients to Grads. Layers before
// firstTrainable get no gradient (they are frozen). It returns the mean
// loss and how many images were classified correctly.
func (s *TrainSession) Step(x []float32, labels []int, firstTrainable int) (loss float64, correct int, err error) {
	return s.StepFrom(0, x, labels, firstTrainable)
}

// StepFrom is Step for inputs that are already the activations entering
// layer from (cached features of frozen layers); firstTrainable ≥ from.
func (s *TrainSession) StepFrom(from int, x []float32, labels []int, firstTrainable int) (loss float64, correct int, err error) {
	n := len(labels)
	k := s.m.Spec.Classes
	if n == 0 || n > s.r.cap {
		return 0, 0, fmt.Errorf("batch of %d images, session holds 1..%d", n, s.r.cap)
	}
	if need := n * s.m.Shapes()[from].Len(); len(x) < need {
		return 0, 0, fmt.Errorf("input holds %d values, %d images need %d", len(x), n, need)
	}
	firstTrainable = max(firstTrainable, from)
	logits := s.r.forwardRange(x, n, from, len(s.m.Spec.Layers))
	p := s.probs[:n*k]
	copy(p, logits)
	softmax(n, k, p)
	d := s.dlog[:n*k]
	inv := 1 / float32(n)
	for i, y := range labels {
		if y < 0 || y >= k {
			return 0, 0, fmt.Errorf("label %d of image %d is outside 0..%d", y, i, k-1)
		}
		row := p[i*k : (i+1)*k]
		loss += CrossEntropy(logits[i*k:(i+1)*k], y)
		best := 0
		for j, v := range row {
			d[i*k+j] = v * inv
			if v > row[best] {
				best = j
			}
		}
		d[i*k+y] -= inv
		if best == y {
			correct++
		}
	}
	s.r.backward(d, n, s.Grads, firstTrainable)
	return loss / float64(n), correct, nil
}

// Features runs the (eval-mode) layers before layer to and returns their
// output for n images, in a buffer owned by the session.
func (s *TrainSession) Features(x []float32, n, to int) []float32 {
	train := s.r.train
	s.r.train = false
	defer func() { s.r.train = train }()
	return s.r.forwardRange(x, n, 0, to)
}

// Logits runs layers [from, end) in eval mode and returns the logits.
func (s *TrainSession) Logits(from int, x []float32, n int) []float32 {
	train := s.r.train
	s.r.train = false
	defer func() { s.r.train = train }()
	return s.r.forwardRange(x, n, from, len(s.m.Spec.Layers))
}

// Range runs layers [from, to) in eval mode on x, the input of layer
// from, and returns the input of layer to, in a buffer owned by the
// session.
func (s *TrainSession) Range(x []float32, n, from, to int) []float32 {
	train := s.r.train
	s.r.train = false
	defer func() { s.r.train = train }()
	return s.r.forwardRange(x, n, from, to)
}

// Loss evaluates the mean cross-entropy without touching gradients (eval
// mode: no dropout). Used by gradient checks and validation.
func (s *TrainSession) Loss(x []float32, labels []int) float64 {
	train := s.r.train
	s.r.train = false
	defer func() { s.r.train = train }()
	n, k := len(labels), s.m.Spec.Classes
	logits := s.r.forward(x, n)
	var loss float64
	for i, y := range labels {
		loss += CrossEntropy(logits[i*k:(i+1)*k], y)
	}
	return loss / float64(n)
}

// CrossEntropy is −log softmax(z)[y] for logits z, computed as log Σexp(z−max) − (z_y −
// max) in float64: taking the log of a float32 probability would cap the
// loss where the probability underflows (a confident wrong answer).
func CrossEntropy(z []float32, y int) float64 {
	m := z[0]
	for _, v := range z {
		m = max(m, v)
	}
	var s float64
	for _, v := range z {
		s += math.Exp(float64(v - m))
	}
	return math.Log(s) - float64(z[y]-m)
}
