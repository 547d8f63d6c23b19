package model

import (
	"context"
	"errors"
)

// ErrEngineFailed is wrapped by the errors of an engine that can no longer
// run anything (a CUDA context lost to a sticky error). Callers switch to
// another engine instead of retrying.
var ErrEngineFailed = errors.New("inference engine failed")

// Engine runs inference for one model: the CPU Classifier, or the CUDA
// engine in package gpu. All methods are safe for concurrent use.
type Engine interface {
	// Probabilities writes n×Classes probabilities for n NCHW images.
	Probabilities(ctx context.Context, x []float32, n int, probs []float32) error
	// Classify returns the top-k predictions of n images.
	Classify(ctx context.Context, x []float32, n, topK int) ([]Prediction, error)
	Model() *Model
	// Engine names the backend ("cpu/openblas", "cuda/Orin …").
	Engine() string
	// Close frees what the engine holds beyond the model (GPU memory).
	Close() error
}

// Close is a no-op: the CPU engine's buffers are garbage collected.
func (c *Classifier) Close() error { return nil }

var _ Engine = (*Classifier)(nil)

// ClassifyWith turns probabilities from any engine into predictions.
func ClassifyWith(ctx context.Context, e Engine, x []float32, n, topK int) ([]Prediction, error) {
	m := e.Model()
	k := m.Classes()
	probs := make([]float32, n*k)
	if err := e.Probabilities(ctx, x, n, probs); err != nil {
		return nil, err
	}
	out := make([]Prediction, n)
	for i := range out {
		p := probs[i*k : (i+1)*k]
		out[i] = Prediction{Probs: p, Top: TopK(p, m.Meta.Labels, topK)}
	}
	return out, nil
}
