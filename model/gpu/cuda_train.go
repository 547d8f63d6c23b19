//go:build cuda

package gpu

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"unsafe"

	"gorgonia.org/cu"

	"github.com/leafwatch/leafwatch/model"
)

// Trainer runs forward, backward and the SGD step on the device. Weights
// and momentum live on the device; Sync copies them back for checkpoints.
// Dropout masks are drawn on the host from the same random stream as the
// CPU engine, so a GPU step equals a CPU step up to rounding; no kernel
// uses atomics, so two identical runs give identical bytes.
type Trainer struct {
	*net
	opt OptimSettings

	mu       sync.Mutex
	grads    map[string]cu.DevicePtr
	velocity map[string]cu.DevicePtr
	dacts    []cu.DevicePtr
	argmax   []cu.DevicePtr
	scale    []cu.DevicePtr
	mask     []cu.DevicePtr
	labels   cu.DevicePtr
	loss     cu.DevicePtr
	correct  cu.DevicePtr
	hostMask []float32
}

func newTrainer(m *model.Model, batch int, opt OptimSettings) (TrainStepper, error) {
	if batch < 1 {
		return nil, fmt.Errorf("batch size %d: must be at least 1", batch)
	}
	ld, err := lockedOpen(opt.Log)
	if err != nil {
		return nil, err
	}
	defer ld.unlock()
	d := ld.device
	fail := func(err error) (TrainStepper, error) {
		d.release()
		return nil, err
	}
	nt, err := d.newNet(m, batch, model.FP32) // training stays fp32
	if err != nil {
		return fail(err)
	}
	t := &Trainer{net: nt, opt: opt, grads: map[string]cu.DevicePtr{}, velocity: map[string]cu.DevicePtr{}}
	for _, name := range model.SortedParamNames(m) {
		p := m.Params[name]
		for _, dst := range []map[string]cu.DevicePtr{t.grads, t.velocity} {
			if dst[name], err = d.alloc(len(p.Data)); err != nil {
				return fail(err)
			}
		}
		v := opt.Velocity[name]
		if len(v) != len(p.Data) {
			v = make([]float32, len(p.Data))
		}
		if err := d.upload(t.velocity[name], v); err != nil {
			return fail(err)
		}
	}
	L := len(m.Spec.Layers)
	t.dacts = make([]cu.DevicePtr, L+1)
	t.argmax, t.scale, t.mask = make([]cu.DevicePtr, L), make([]cu.DevicePtr, L), make([]cu.DevicePtr, L)
	for i, l := range m.Spec.Layers {
		in, out := t.shapes[i], t.shapes[i+1]
		if i == 0 {
			if t.dacts[0], err = d.alloc(batch * in.Len()); err != nil {
				return fail(err)
			}
		}
		if inPlace(l.Kind) && i > 0 {
			t.dacts[i+1] = t.dacts[i]
		} else if t.dacts[i+1], err = d.alloc(batch * out.Len()); err != nil {
			return fail(err)
		}
		switch l.Kind {
		case model.MaxPool:
			t.argmax[i], err = d.alloc(batch * out.Len())
		case model.LRN:
			t.scale[i], err = d.alloc(batch * in.Len())
		case model.Dropout:
			t.mask[i], err = d.alloc(batch * in.Len())
		}
		if err != nil {
			return fail(err)
		}
	}
	for _, p := range []*cu.DevicePtr{&t.labels, &t.loss, &t.correct} {
		if *p, err = d.alloc(batch); err != nil {
			return fail(err)
		}
	}
	return t, nil
}

func (t *Trainer) Name() string { return t.d.name }

// enter serialises use of the trainer and makes its context current.
func (t *Trainer) enter() (func(), error) {
	t.mu.Lock()
	leave, err := t.d.enter()
	if err != nil {
		t.mu.Unlock()
		return nil, err
	}
	return func() { leave(); t.mu.Unlock() }, nil
}

// checkBatch refuses batches the device buffers were not sized for.
func (t *Trainer) checkBatch(n, from int, x []float32) error {
	if n < 1 || n > t.cap {
		return fmt.Errorf("batch of %d images, trainer holds 1..%d", n, t.cap)
	}
	if from < 0 || from >= len(t.shapes)-1 {
		return fmt.Errorf("entry layer %d outside 0..%d", from, len(t.shapes)-2)
	}
	if need := n * t.shapes[from].Len(); len(x) < need {
		return fmt.Errorf("input holds %d values, %d images entering layer %d need %d", len(x), n, from, need)
	}
	return nil
}

// forward runs layers [from, to); train selects dropout and the saved
// state the backward pass needs.
func (t *Trainer) forward(x []float32, n, from, to int, train bool, rng *rand.Rand) error {
	d := t.d
	if err := d.upload(t.acts[from], x[:n*t.shapes[from].Len()]); err != nil {
		return err
	}
	for i := from; i < to; i++ {
		l := &t.m.Spec.Layers[i]
		if !train || (l.Kind != model.LRN && l.Kind != model.MaxPool && l.Kind != model.Dropout) {
			if err := t.layer(i, n); err != nil {
				return err
			}
			continue
		}
		in, out := t.shapes[i], t.shapes[i+1]
		src, dst := t.acts[i], t.acts[i+1]
		il, ol := in.Len(), out.Len()
		var err error
		switch l.Kind {
		case model.LRN:
			for j := 0; j < n && err == nil; j++ {
				err = d.launch("lrn_train", il, off(src, j*il), off(dst, j*ol), off(t.scale[i], j*il), in.C, in.H*in.W, l.Size, float64(l.Alpha), float64(l.Beta), float64(l.Bias))
			}
		case model.MaxPool:
			for j := 0; j < n && err == nil; j++ {
				err = d.launch("maxpool_train", ol, off(src, j*il), off(dst, j*ol), off(t.argmax[i], j*ol), in.C, in.H, in.W, out.H, out.W, l.Kernel, l.Stride, l.Pad)
			}
		case model.Dropout:
			if l.P > 0 {
				// The same draws, in the same order, as the CPU runner.
				if cap(t.hostMask) < n*il {
					t.hostMask = make([]float32, n*il)
				}
				mask := t.hostMask[:n*il]
				keep := 1 / (1 - l.P)
				for k := range mask {
					if rng.Float32() < l.P {
						mask[k] = 0
					} else {
						mask[k] = keep
					}
				}
				if err = d.upload(t.mask[i], mask); err == nil {
					err = d.launch("mul", n*il, dst, t.mask[i], n*il)
				}
			}
		}
		if err != nil {
			return fmt.Errorf("layer %d (%s): %w", i, l.Kind, err)
		}
	}
	return nil
}

// backward mirrors the CPU runner's backward, from the logits' gradient.
func (t *Trainer) backward(n, stopAt int) error {
	d := t.d
	L := len(t.m.Spec.Layers)
	for i := L - 1; i >= stopAt; i-- {
		l := &t.m.Spec.Layers[i]
		in, out := t.shapes[i], t.shapes[i+1]
		il, ol := in.Len(), out.Len()
		dy, dx := t.dacts[i+1], t.dacts[i]
		needDx := i > stopAt
		var err error
		switch l.Kind {
		case model.Conv:
			w := t.weights[l.Name+".weight"]
			gw, gb := t.grads[l.Name+".weight"], t.grads[l.Name+".bias"]
			cinG, coutG := in.C/l.Groups, l.Out/l.Groups
			kk, p := cinG*l.Kernel*l.Kernel, out.H*out.W
			for j := 0; j < n && err == nil; j++ {
				xj, dyj, dxj := off(t.acts[i], j*il), off(dy, j*ol), off(dx, j*il)
				if err = d.launch("bias_grad_rows", l.Out, dyj, gb, l.Out, p); err != nil {
					break
				}
				for g := 0; g < l.Groups && err == nil; g++ {
					dyg := off(dyj, g*coutG*p)
					if err = d.launch("im2col", kk*p, xj, in.H, in.W, g*cinG, cinG, l.Kernel, l.Stride, l.Pad, out.H, out.W, t.col); err != nil {
						break
					}
					if err = d.sgemm(false, true, coutG, kk, p, dyg, p, t.col, p, 1, off(gw, g*coutG*kk), kk); err != nil || !needDx {
						continue
					}
					if err = d.sgemm(true, false, kk, p, coutG, off(w, g*coutG*kk), kk, dyg, p, 0, t.col, p); err == nil {
						err = d.launch("col2im", cinG*in.H*in.W, t.col, in.H, in.W, g*cinG, cinG, l.Kernel, l.Stride, l.Pad, out.H, out.W, dxj)
					}
				}
			}
		case model.ReLU:
			err = d.launch("relu_bwd", n*ol, t.acts[i+1], dy, n*ol)
		case model.LRN:
			if needDx {
				for j := 0; j < n && err == nil; j++ {
					s := j * il
					err = d.launch("lrn_bwd", il, off(t.acts[i], s), off(t.acts[i+1], s), off(t.scale[i], s), off(dy, s), off(dx, s), in.C, in.H*in.W, l.Size, float64(l.Alpha), float64(l.Beta))
				}
			}
		case model.MaxPool:
			if needDx {
				for j := 0; j < n && err == nil; j++ {
					err = d.launch("maxpool_bwd", il, off(dy, j*ol), off(t.argmax[i], j*ol), off(dx, j*il), in.C, in.H, in.W, out.H, out.W, l.Kernel, l.Stride, l.Pad)
				}
			}
		case model.Dropout:
			if l.P > 0 {
				err = d.launch("mul", n*il, dy, t.mask[i], n*il)
			}
		case model.FC:
			w := t.weights[l.Name+".weight"]
			gw, gb := t.grads[l.Name+".weight"], t.grads[l.Name+".bias"]
			if err = d.launch("bias_grad_cols", l.Out, dy, gb, n, l.Out); err == nil {
				err = d.sgemm(true, false, l.Out, il, n, dy, l.Out, t.acts[i], il, 1, gw, il)
			}
			if err == nil && needDx {
				err = d.sgemm(false, false, n, il, l.Out, dy, l.Out, w, il, 0, dx, il)
			}
		}
		if err != nil {
			return fmt.Errorf("backward layer %d (%s): %w", i, l.Kind, err)
		}
	}
	return nil
}

// Step runs one batch entering at layer from, trains layers from first
// on, and applies SGD with learning rate lr; rng draws the dropout masks
// exactly as the CPU path does.
func (t *Trainer) Step(from int, x []float32, labels []int, first int, lr float32, rng *rand.Rand) (float64, int, error) {
	n, k := len(labels), t.m.Spec.Classes
	if err := t.checkBatch(n, from, x); err != nil {
		return 0, 0, err
	}
	lab := make([]int32, n)
	for i, y := range labels {
		if y < 0 || y >= k {
			return 0, 0, fmt.Errorf("label %d of image %d is outside 0..%d", y, i, k-1)
		}
		lab[i] = int32(y)
	}
	leave, err := t.enter()
	if err != nil {
		return 0, 0, err
	}
	defer leave()
	d := t.d
	L := len(t.m.Spec.Layers)
	first = max(first, from)
	for _, name := range model.SortedParamNames(t.m) {
		if err := d.check(cu.MemsetD32(t.grads[name], 0, int64(len(t.m.Params[name].Data)))); err != nil {
			return 0, 0, err
		}
	}
	if err := t.forward(x, n, from, L, true, rng); err != nil {
		return 0, 0, err
	}
	if err := d.check(cu.MemcpyHtoD(t.labels, unsafe.Pointer(&lab[0]), int64(n*4))); err != nil {
		return 0, 0, err
	}
	if err := d.launch("softmax_ce", n, t.acts[L], t.labels, t.dacts[L], t.loss, t.correct, n, k); err != nil {
		return 0, 0, err
	}
	if err := t.backward(n, first); err != nil {
		return 0, 0, err
	}
	for _, name := range model.SortedParamNames(t.m) {
		p := t.m.Params[name]
		mult, ok := t.opt.Mult[name]
		if !ok {
			mult = 1
		}
		if mult == 0 {
			continue
		}
		decay := float64(t.opt.WeightDecay)
		if len(p.Shape) == 1 {
			decay = 0 // biases are not decayed
		}
		if err := d.launch("sgd", len(p.Data), t.weights[name], t.grads[name], t.velocity[name], len(p.Data),
			float64(lr*mult), float64(t.opt.Momentum), decay); err != nil {
			return 0, 0, err
		}
	}
	losses, corr := make([]float32, n), make([]float32, n)
	if err := d.download(losses, t.loss); err != nil {
		return 0, 0, err
	}
	if err := d.download(corr, t.correct); err != nil {
		return 0, 0, err
	}
	var loss float64
	correct := 0
	for i := range losses {
		loss += float64(losses[i])
		correct += int(corr[i])
	}
	return loss / float64(n), correct, d.check(cu.Synchronize())
}

// Logits runs layers [from, end) in eval mode.
func (t *Trainer) Logits(from int, x []float32, n int) ([]float32, error) {
	if err := t.checkBatch(n, from, x); err != nil {
		return nil, err
	}
	leave, err := t.enter()
	if err != nil {
		return nil, err
	}
	defer leave()
	L := len(t.m.Spec.Layers)
	if err := t.forward(x, n, from, L, false, nil); err != nil {
		return nil, err
	}
	out := make([]float32, n*t.m.Spec.Classes)
	return out, t.d.download(out, t.acts[L])
}

// Features runs layers [0, to) in eval mode and returns the input of
// layer to.
func (t *Trainer) Features(x []float32, n, to int) ([]float32, error) {
	if err := t.checkBatch(n, 0, x); err != nil {
		return nil, err
	}
	if to < 0 || to > len(t.m.Spec.Layers) {
		return nil, fmt.Errorf("feature layer %d outside 0..%d", to, len(t.m.Spec.Layers))
	}
	leave, err := t.enter()
	if err != nil {
		return nil, err
	}
	defer leave()
	if err := t.forward(x, n, 0, to, false, nil); err != nil {
		return nil, err
	}
	out := make([]float32, n*t.shapes[to].Len())
	return out, t.d.download(out, t.acts[to])
}

// Sync copies weights into the model and momentum into velocity.
func (t *Trainer) Sync(velocity map[string][]float32) error {
	leave, err := t.enter()
	if err != nil {
		return err
	}
	defer leave()
	for name, p := range t.m.Params {
		if err := t.d.download(p.Data, t.weights[name]); err != nil {
			return err
		}
		if v, ok := velocity[name]; ok && len(v) == len(p.Data) {
			if err := t.d.download(v, t.velocity[name]); err != nil {
				return err
			}
		}
	}
	return nil
}

// Close frees the device memory, the cuBLAS handle and the context.
// Closing twice is harmless.
func (t *Trainer) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.d.released {
		return nil
	}
	unlock := lockThread()
	defer unlock()
	cu.SetCurrentContext(t.d.ctx)
	t.d.release()
	return nil
}
