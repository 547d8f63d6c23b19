package cpu

import (
	"math/rand/v2"

	"github.com/leafwatch/leafwatch/model"
)

// runner owns every buffer one forward (and backward) pass needs for up to
// cap images. It is reused between runs so the steady state allocates nothing.
type runner struct {
	m     *model.Model
	cap   int
	train bool
	rng   *rand.Rand

	acts   [][]float32 // acts[i] is layer i's input; acts[len] the logits
	col    []float32
	tmp    []float32      // a batched convolution's output before the scatter
	q      []*qfc         // streaming FC weights per layer (inference; see fc.h)
	wino   []*winoWeights // Winograd filters per layer (inference)
	argmax [][]int32
	scale  [][]float32 // LRN denominators (training)
	mask   [][]float32 // dropout masks, already scaled by 1/(1-p)

	dacts [][]float32 // gradients w.r.t. acts (training)
}

func inPlace(k model.LayerKind) bool { return k == model.ReLU || k == model.Dropout }

func newRunner(m *model.Model, capacity int, train bool, rng *rand.Rand) *runner {
	L := len(m.Spec.Layers)
	r := &runner{m: m, cap: capacity, train: train, rng: rng,
		acts: make([][]float32, L+1), argmax: make([][]int32, L),
		scale: make([][]float32, L), mask: make([][]float32, L)}
	if train {
		r.dacts = make([][]float32, L+1)
	}
	colLen, tmpLen := 0, 0
	for i, l := range m.Spec.Layers {
		in, out := m.Shapes()[i], m.Shapes()[i+1]
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
		case model.Conv:
			c, t := convBuffers(&l, in, out, capacity)
			colLen, tmpLen = max(colLen, c), max(tmpLen, t)
			if !train && winogradFits(&l) { // either path may run
				c, t = winoBuffers(&l, in, out, capacity)
				colLen, tmpLen = max(colLen, c), max(tmpLen, t)
			}
		case model.MaxPool:
			if train {
				r.argmax[i] = make([]int32, capacity*out.Len())
			}
		case model.LRN:
			if train {
				r.scale[i] = make([]float32, capacity*in.Len())
			}
		case model.Dropout:
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
		r.acts[0] = x[:n*m.Shapes()[0].Len()]
		if len(m.Spec.Layers) > 0 && inPlace(m.Spec.Layers[0].Kind) {
			r.acts[1] = r.acts[0]
		}
	} else {
		// Later buffers may alias this one (in-place layers): fill, don't swap.
		copy(r.acts[from][:n*m.Shapes()[from].Len()], x)
	}
	for i := from; i < to; i++ {
		l := &m.Spec.Layers[i]
		in, out := m.Shapes()[i], m.Shapes()[i+1]
		src, dst := r.acts[i], r.acts[i+1]
		il, ol := in.Len(), out.Len()
		switch l.Kind {
		case model.Conv:
			w, b := m.Params[l.Name+".weight"].Data, m.Params[l.Name+".bias"].Data
			// A ReLU right after (in place, so nothing keeps the
			// unrectified output) is applied with the bias.
			relu := i+1 < to && m.Spec.Layers[i+1].Kind == model.ReLU
			if r.wino != nil && r.wino[i] != nil {
				convForwardWinograd(l, in, out, n, src, r.wino[i], b, dst, r.col, r.tmp, relu)
			} else {
				convForwardBatch(l, in, out, n, src, w, b, dst, r.col, r.tmp, relu)
			}
			if relu {
				i++
			}
		case model.ReLU:
			reluForward(dst[:n*ol])
		case model.LRN:
			if !r.train {
				lrnPar(l, in, n, src, dst)
				continue
			}
			for j := 0; j < n; j++ {
				lrnForward(l, in, src[j*il:(j+1)*il], dst[j*ol:(j+1)*ol], r.scale[i][j*il:(j+1)*il])
			}
		case model.MaxPool:
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
		case model.Dropout:
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
		case model.FC:
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
	return r.acts[to][:n*m.Shapes()[to].Len()]
}

// backward propagates dLogits (n×classes) and accumulates parameter
// gradients into grads. Layers before stopAt get no gradient, which skips
// the work for frozen groups.
func (r *runner) backward(dLogits []float32, n int, grads map[string]*model.Tensor, stopAt int) {
	m := r.m
	L := len(m.Spec.Layers)
	copy(r.dacts[L], dLogits[:n*m.Spec.Classes])
	for i := L - 1; i >= stopAt; i-- {
		l := &m.Spec.Layers[i]
		in, out := m.Shapes()[i], m.Shapes()[i+1]
		il, ol := in.Len(), out.Len()
		dy, dx := r.dacts[i+1], r.dacts[i]
		needDx := i > stopAt
		switch l.Kind {
		case model.Conv:
			w := m.Params[l.Name+".weight"].Data
			gw, gb := grads[l.Name+".weight"].Data, grads[l.Name+".bias"].Data
			for j := 0; j < n; j++ {
				var dxj []float32
				if needDx {
					dxj = dx[j*il : (j+1)*il]
				}
				convBackward(l, in, out, r.acts[i][j*il:(j+1)*il], w, dy[j*ol:(j+1)*ol], gw, gb, dxj, r.col)
			}
		case model.ReLU:
			reluBackward(r.acts[i+1][:n*ol], dy[:n*ol])
		case model.LRN:
			if needDx {
				for j := 0; j < n; j++ {
					s := j * il
					lrnBackward(l, in, r.acts[i][s:s+il], r.acts[i+1][s:s+il], r.scale[i][s:s+il], dy[s:s+il], dx[s:s+il])
				}
			}
		case model.MaxPool:
			if needDx {
				for j := 0; j < n; j++ {
					maxPoolBackward(out, il, dy[j*ol:(j+1)*ol], dx[j*il:(j+1)*il], r.argmax[i][j*ol:(j+1)*ol])
				}
			}
		case model.Dropout:
			if l.P > 0 {
				for k, v := range r.mask[i][:n*il] {
					dy[k] *= v
				}
			}
		case model.FC:
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
