package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
)

// Tensor is a dense float32 array in row-major order.
type Tensor struct {
	Shape []int
	Data  []float32
}

// NewTensor allocates a zeroed tensor.
func NewTensor(shape ...int) *Tensor {
	return &Tensor{Shape: append([]int(nil), shape...), Data: make([]float32, numel(shape))}
}

func numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

func sameShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Model is an AlexNet with its weights and metadata. Its weights are held
// once and never written during inference, so any number of goroutines may
// classify with one Model (see Classifier).
type Model struct {
	Spec   Spec
	Meta   Metadata
	Params map[string]*Tensor
	// Notes are what an importer changed that its user should hear (not
	// saved with the checkpoint).
	Notes []string

	shapes []Shape3
}

// Released names, sorted, the parameters whose fp32 values an engine built
// with Options.ReleaseWeights dropped (their Data is nil, their Shape
// kept); empty for a whole model.
func (m *Model) Released() []string {
	var names []string
	for name, t := range m.Params {
		if t.Data == nil && numel(t.Shape) > 0 {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// ReleaseAll drops every parameter's fp32 values (shapes kept), for an
// engine that holds its own copy: the CUDA engine's is on the device, and
// on a Jetson, whose GPU shares the board's memory, the host copy would
// count twice.
func (m *Model) ReleaseAll() {
	for _, t := range m.Params {
		t.Data = nil
	}
}

// Whole returns an error naming op when some of the model's weights were
// released to an engine: saving, exporting, training, the CUDA engine and
// a new classifier need every fp32 value.
func (m *Model) Whole(op string) error {
	if r := m.Released(); len(r) > 0 {
		return fmt.Errorf("%s: the fp32 weights of %s were released to an engine (Options.ReleaseWeights); load the model again", op, strings.Join(r, ", "))
	}
	return nil
}

// New assembles a model from a spec and parameters, checking that every
// parameter is present with the right shape and that nothing extra is.
func New(spec Spec, params map[string]*Tensor, meta Metadata) (*Model, error) {
	shapes, err := spec.Shapes()
	if err != nil {
		return nil, err
	}
	want, err := spec.Params()
	if err != nil {
		return nil, err
	}
	seen := make(map[string]bool, len(want))
	for _, p := range want {
		t, ok := params[p.Name]
		if !ok {
			return nil, fmt.Errorf("missing tensor %q (%s, shape %v)", p.Name, spec.Layers[p.Layer].Group, p.Shape)
		}
		if !sameShape(t.Shape, p.Shape) {
			return nil, fmt.Errorf("tensor %q has shape %v, %s %s needs %v", p.Name, t.Shape, spec.Variant, spec.Layers[p.Layer].Group, p.Shape)
		}
		if len(t.Data) != numel(t.Shape) {
			return nil, fmt.Errorf("tensor %q holds %d values for shape %v", p.Name, len(t.Data), t.Shape)
		}
		seen[p.Name] = true
	}
	for _, name := range sortedKeys(params) {
		if !seen[name] {
			return nil, fmt.Errorf("extra tensor %q is not part of the %s AlexNet", name, spec.Variant)
		}
	}
	meta.Variant = spec.Variant
	meta.InputSize = spec.InputSize
	if meta.Labels == nil {
		meta.Labels = make([]string, spec.Classes)
		for i := range meta.Labels {
			meta.Labels[i] = fmt.Sprintf("class_%d", i)
		}
	}
	if len(meta.Labels) != spec.Classes {
		return nil, fmt.Errorf("%d class labels do not match the %d-way last layer", len(meta.Labels), spec.Classes)
	}
	return &Model{Spec: spec, Meta: meta, Params: params, shapes: shapes}, nil
}

// NewRandom builds a model with He-initialised weights, seeded for repeatability.
func NewRandom(v Variant, classes int, seed uint64) (*Model, error) {
	spec, err := NewSpec(v, classes)
	if err != nil {
		return nil, err
	}
	ps, err := spec.Params()
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(seed, 0x1eaf))
	params := make(map[string]*Tensor, len(ps))
	for _, p := range ps {
		t := NewTensor(p.Shape...)
		if len(p.Shape) > 1 {
			InitHe(t, rng)
		}
		params[p.Name] = t
	}
	meta := DefaultMetadata(v)
	meta.Source = fmt.Sprintf("random initialisation (seed %d)", seed)
	return New(spec, params, meta)
}

// InitHe fills a weight tensor with N(0, 2/fan_in), the initialisation for
// layers followed by ReLU.
func InitHe(t *Tensor, rng *rand.Rand) {
	fanIn := numel(t.Shape[1:])
	std := float32(math.Sqrt(2 / float64(fanIn)))
	for i := range t.Data {
		t.Data[i] = float32(rng.NormFloat64()) * std
	}
}

// SortedParamNames lists m's parameter names in a stable order.
func SortedParamNames(m *Model) []string { return sortedKeys(m.Params) }

// InputLen is the number of float32 values of one preprocessed image.
func (m *Model) InputLen() int { return m.shapes[0].Len() }

// Classes is the number of output classes.
func (m *Model) Classes() int { return m.Spec.Classes }

// Labels returns the class labels in output order.
func (m *Model) Labels() []string { return m.Meta.Labels }

// ActLen is the per-image size of the activations entering layer i.
func (m *Model) ActLen(i int) int { return m.shapes[i].Len() }

// Shapes are the activation shapes entering each layer, and the logits'
// last: what an engine sizes its buffers by.
func (m *Model) Shapes() []Shape3 { return m.shapes }

// Numel is the number of values of a tensor of this shape.
func Numel(shape []int) int { return numel(shape) }
