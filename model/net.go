package model

import (
	"fmt"
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
	std := sqrt32(2 / float32(fanIn))
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

// runner owns every buffer one forward (and backward) pass needs for up to
// cap images. It is reused between runs so the steady state allocates nothing.
type runner struct {
	m     *Model
	cap   int
	train bool
	rng   *rand.Rand

	acts   [][]float32 // acts[i] is layer i's input; acts[len] the logits
	col    []float32
	tmp    []float32      // a batched convolution's output before the scatter
	q      []*qfc         // streaming FC weights per layer (inference; see fc.c)
	wino   []*winoWeights // Winograd filters per layer (inference)
	argmax [][]int32
	scale  [][]float32 // LRN denominators (training)
	mask   [][]float32 // dropout masks, already scaled by 1/(1-p)

	dacts [][]float32 // gradients w.r.t. acts (training)
}

func inPlace(k LayerKind) bool { return k == ReLU || k == Dropout }

func newRunner(m *Model, capacity int, train bool, rng *rand.Rand) *runner {
	L := len(m.Spec.Layers)
	r := &runner{m: m, cap: capacity, train: train, rng: rng,
		acts: make([][]float32, L+1), argmax: make([][]int32, L),
		scale: make([][]float32, L), mask: make([][]float32, L)}
	if train {
		r.dacts = make([][]float32, L+1)
	}
	colLen, tmpLen := 0, 0
	for i, l := range m.Spec.Layers {
		in, out := m.shapes[i], m.shapes[i+1]
		if inPlace(l.Kind) && i > 0 {
			r.acts[i+1] = r.acts[i]
		} else {
			r.acts[i+1] = make([]float32, capacity*out.Len())
		}
		if train {
			if i == 0 {
				r.dacts[0] = make([]float32, capacity*in.Len())
			}
			if inPlace(l.Kind) && i > 0 {
				r.dacts[i+1] = r.dacts[i]
			} else {
				r.dacts[i+1] = make([]float32, capacity*out.Len())
			}
		}
		switch l.Kind {
		case Conv:
			c, t := convBuffers(&l, in, out, capacity)
			colLen, tmpLen = max(colLen, c), max(tmpLen, t)
			if !train && winogradFits(&l) { // either path may run
				c, t = winoBuffers(&l, in, out, capacity)
				colLen, tmpLen = max(colLen, c), max(tmpLen, t)
			}
		case MaxPool:
			if train {
				r.argmax[i] = make([]int32, capacity*out.Len())
			}
		case LRN:
			if train {
				r.scale[i] = make([]float32, capacity*in.Len())
			}
		case Dropout:
			if train {
				r.mask[i] = make([]float32, capacity*in.Len())
			}
		}
	}
	r.col = make([]float32, colLen)
	r.tmp = make([]float32, tmpLen)
	return r
}

// forward runs n images (n ≤ cap) from x and returns the logits, n×classes,
// in a buffer owned by the runner. x must stay untouched until backward.
func (r *runner) forward(x []float32, n int) []float32 {
	return r.forwardRange(x, n, 0, len(r.m.Spec.Layers))[:n*r.m.Spec.Classes]
}

// forwardRange runs layers [from, to) with x as the input of layer from and
// returns the input of layer to (the logits when to is the last layer).
func (r *runner) forwardRange(x []float32, n, from, to int) []float32 {
	m := r.m
	if from == 0 {
		r.acts[0] = x[:n*m.shapes[0].Len()]
		if len(m.Spec.Layers) > 0 && inPlace(m.Spec.Layers[0].Kind) {
			r.acts[1] = r.acts[0]
		}
	} else {
		// Later buffers may alias this one (in-place layers): fill, don't swap.
		copy(r.acts[from][:n*m.shapes[from].Len()], x)
	}
	for i := from; i < to; i++ {
		l := &m.Spec.Layers[i]
		in, out := m.shapes[i], m.shapes[i+1]
		src, dst := r.acts[i], r.acts[i+1]
		il, ol := in.Len(), out.Len()
		switch l.Kind {
		case Conv:
			w, b := m.Params[l.Name+".weight"].Data, m.Params[l.Name+".bias"].Data
			// A ReLU right after (in place, so nothing keeps the
			// unrectified output) is applied with the bias.
			relu := i+1 < to && m.Spec.Layers[i+1].Kind == ReLU
			if r.wino != nil && r.wino[i] != nil {
				convForwardWinograd(l, in, out, n, src, r.wino[i], b, dst, r.col, r.tmp, relu)
			} else {
				convForwardBatch(l, in, out, n, src, w, b, dst, r.col, r.tmp, relu)
			}
			if relu {
				i++
			}
		case ReLU:
			reluForward(dst[:n*ol])
		case LRN:
			if !r.train {
				lrnPar(l, in, n, src, dst)
				continue
			}
			for j := 0; j < n; j++ {
				lrnForward(l, in, src[j*il:(j+1)*il], dst[j*ol:(j+1)*ol], r.scale[i][j*il:(j+1)*il])
			}
		case MaxPool:
			if !r.train {
				maxPoolPar(l, in, out, n, src, dst)
				continue
			}
			for j := 0; j < n; j++ {
				var am []int32
				if r.train {
					am = r.argmax[i][j*ol : (j+1)*ol]
				}
				maxPoolForward(l, in, out, src[j*il:(j+1)*il], dst[j*ol:(j+1)*ol], am)
			}
		case Dropout:
			if r.train && l.P > 0 {
				keep := 1 / (1 - l.P)
				mask := r.mask[i][:n*il]
				for k := range mask {
					if r.rng.Float32() < l.P {
						mask[k] = 0
					} else {
						mask[k] = keep
					}
					dst[k] *= mask[k]
				}
			}
		case FC:
			w, b := m.Params[l.Name+".weight"].Data, m.Params[l.Name+".bias"].Data
			// The streaming kernel at batch 1 too: ~10% faster than
			// OpenBLAS's GEMV on fc6 (both read each weight once).
			if q := r.q; q != nil && q[i] != nil {
				fcForwardQ(q[i], n, src, b, dst)
				continue
			}
			fcForward(n, il, l.Out, src, w, b, dst)
		}
	}
	return r.acts[to][:n*m.shapes[to].Len()]
}

// backward propagates dLogits (n×classes) and accumulates parameter
// gradients into grads. Layers before stopAt get no gradient, which skips
// the work for frozen groups.
func (r *runner) backward(dLogits []float32, n int, grads map[string]*Tensor, stopAt int) {
	m := r.m
	L := len(m.Spec.Layers)
	copy(r.dacts[L], dLogits[:n*m.Spec.Classes])
	for i := L - 1; i >= stopAt; i-- {
		l := &m.Spec.Layers[i]
		in, out := m.shapes[i], m.shapes[i+1]
		il, ol := in.Len(), out.Len()
		dy, dx := r.dacts[i+1], r.dacts[i]
		needDx := i > stopAt
		switch l.Kind {
		case Conv:
			w := m.Params[l.Name+".weight"].Data
			gw, gb := grads[l.Name+".weight"].Data, grads[l.Name+".bias"].Data
			for j := 0; j < n; j++ {
				var dxj []float32
				if needDx {
					dxj = dx[j*il : (j+1)*il]
				}
				convBackward(l, in, out, r.acts[i][j*il:(j+1)*il], w, dy[j*ol:(j+1)*ol], gw, gb, dxj, r.col)
			}
		case ReLU:
			reluBackward(r.acts[i+1][:n*ol], dy[:n*ol])
		case LRN:
			if needDx {
				for j := 0; j < n; j++ {
					s := j * il
					lrnBackward(l, in, r.acts[i][s:s+il], r.acts[i+1][s:s+il], r.scale[i][s:s+il], dy[s:s+il], dx[s:s+il])
				}
			}
		case MaxPool:
			if needDx {
				for j := 0; j < n; j++ {
					maxPoolBackward(out, il, dy[j*ol:(j+1)*ol], dx[j*il:(j+1)*il], r.argmax[i][j*ol:(j+1)*ol])
				}
			}
		case Dropout:
			if l.P > 0 {
				for k, v := range r.mask[i][:n*il] {
					dy[k] *= v
				}
			}
		case FC:
			w := m.Params[l.Name+".weight"].Data
			gw, gb := grads[l.Name+".weight"].Data, grads[l.Name+".bias"].Data
			var dxs []float32
			if needDx {
				dxs = dx
			}
			fcBackward(n, il, l.Out, r.acts[i], w, dy, gw, gb, dxs)
		}
	}
}
