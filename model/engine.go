package model

import (
	"context"
	"errors"
	"sort"
)

// ErrEngineFailed is wrapped by the errors of an engine that can no longer
// run anything (a CUDA context lost to a sticky error). Callers switch to
// another engine instead of retrying.
var ErrEngineFailed = errors.New("inference engine failed")

// Engine runs inference for one model: the CPU engine (package cpu) or
// the CUDA engine (package gpu). All methods are safe for concurrent use.
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

// Scored is one class with its probability.
type Scored struct {
	Index int     `json:"index"`
	Label string  `json:"label"`
	Prob  float32 `json:"prob"`
}

// Prediction is the result for one image.
type Prediction struct {
	Top   []Scored  // best first
	Probs []float32 // all classes, in label order
}

// Best is the most probable class.
func (p Prediction) Best() Scored { return p.Top[0] }

// DefaultMaxBatch is the batch limit leafwatchd and finetune predict use.
// Results depend (in the last bits) on how a request is split, so tools
// that must match the daemon use the same limit.
const DefaultMaxBatch = 8

// Options tune a Classifier.
type Options struct {
	// MaxBatch is the most images one runner processes at once; larger
	// requests are split. Default DefaultMaxBatch.
	MaxBatch int
	// Workers is how many inferences may run at the same time, each with
	// its own activation buffers (the weights are shared). Default 1:
	// OpenBLAS already uses every core for one inference.
	Workers int
	// Precision of the large fully connected layers' weights (fp32,
	// fp16, bf16, int8); default fp32. See Precision.
	Precision Precision
	// ReleaseWeights lets the engine drop the model's fp32 weights it
	// never reads: a classifier the FC layers it holds in reduced
	// precision and the convolution filters it holds Winograd-transformed
	// (fp16: RSS ~155 MB instead of ~375; fp32: −10 MB), the CUDA engine
	// all of them once they are on the device. The model then serves only
	// this engine: saving, exporting, training, the CUDA engine and another
	// classifier refuse it (Model.Whole). For a program that loads a model
	// to serve it, as leafwatchd does.
	ReleaseWeights bool
}

// TopK returns the k most probable classes, best first; ties keep label order.
func TopK(probs []float32, labels []string, k int) []Scored {
	k = max(1, min(k, len(probs)))
	idx := make([]int, len(probs))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return probs[idx[a]] > probs[idx[b]] })
	out := make([]Scored, k)
	for i := range out {
		j := idx[i]
		out[i] = Scored{Index: j, Label: labels[j], Prob: probs[j]}
	}
	return out
}
