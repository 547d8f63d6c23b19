//go:build cuda

package gpu

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"unsafe"

	"gorgonia.org/cu"

	"github.com/leafwatch/leafwatch/model"
)

// Trainer runs forward, backward and the SGD step on the device. Weights
// and momentum live on the device; Sync copies them back for checkpoints.
// Dropout masks are drawn on the host from the same random stream as the
// CPU engine, so a GPU step equals a CPU step up to rounding.
type Trainer struct {
	*device
	m      *model.Model
	cap    int
	shapes []model.Shape3
	opt    OptimSettings

	mu       sync.Mutex
	weights  map[string]cu.DevicePtr
	grads    map[string]cu.DevicePtr
	velocity map[string]cu.DevicePtr
	acts     []cu.DevicePtr
	dacts    []cu.DevicePtr
	argmax   []cu.DevicePtr
	scale    []cu.DevicePtr
	mask     []cu.DevicePtr
	col      cu.DevicePtr
	labels   cu.DevicePtr
	loss     cu.DevicePtr
	correct  cu.DevicePtr
	hostMask []float32
}

func inPlace(k model.LayerKind) bool { return k == model.ReLU || k == model.Dropout }

func newTrainer(m *model.Model, batch int, opt OptimSettings) (TrainStepper, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	d, err := openDevice()
	if err != nil {
		return nil, err
	}
	t := &Trainer{device: d, m: m, cap: batch, opt: opt, weights: map[string]cu.DevicePtr{}, grads: map[string]cu.DevicePtr{}, velocity: map[string]cu.DevicePtr{}}
	fail := func(err error) (TrainStepper, error) {
		t.release()
		return nil, err
	}
	for name, p := range m.Params {
		for _, dst := range []map[string]cu.DevicePtr{t.weights, t.grads, t.velocity} {
			if dst[name], err = t.alloc(len(p.Data)); err != nil {
				return fail(err)
			}
		}
		if err := upload(t.weights[name], p.Data); err != nil {
			return fail(err)
		}
		v := opt.Velocity[name]
		if len(v) != len(p.Data) {
			v = make([]float32, len(p.Data))
		}
		if err := upload(t.velocity[name], v); err != nil {
			return fail(err)
		}
	}
	if t.shapes, err = m.Spec.Shapes(); err != nil {
		return fail(err)
	}
	L := len(m.Spec.Layers)
	t.acts, t.dacts = make([]cu.DevicePtr, L+1), make([]cu.DevicePtr, L+1)
	t.argmax, t.scale, t.mask = make([]cu.DevicePtr, L), make([]cu.DevicePtr, L), make([]cu.DevicePtr, L)
	colLen := 0
	for i, l := range m.Spec.Layers {
		in, out := t.shapes[i], t.shapes[i+1]
		if i == 0 {
			if t.acts[0], err = t.alloc(batch * in.Len()); err != nil {
				return fail(err)
			}
			if t.dacts[0], err = t.alloc(batch * in.Len()); err != nil {
				return fail(err)
			}
		}
		if inPlace(l.Kind) && i > 0 {
			t.acts[i+1], t.dacts[i+1] = t.acts[i], t.dacts[i]
		} else {
			if t.acts[i+1], err = t.alloc(batch * out.Len()); err != nil {
				return fail(err)
			}
			if t.dacts[i+1], err = t.alloc(batch * out.Len()); err != nil {
				return fail(err)
			}
		}
		switch l.Kind {
		case model.Conv:
			colLen = max(colLen, in.C/l.Groups*l.Kernel*l.Kernel*out.H*out.W)
		case model.MaxPool:
			t.argmax[i], err = t.alloc(batch * out.Len())
		case model.LRN:
			t.scale[i], err = t.alloc(batch * in.Len())
		case model.Dropout:
			t.mask[i], err = t.alloc(batch * in.Len())
		}
		if err != nil {
			return fail(err)
		}
	}
	k := m.Spec.Classes
	for _, p := range []*cu.DevicePtr{&t.col, &t.labels, &t.loss, &t.correct} {
		n := batch
		if p == &t.col {
			n = colLen
		}
		if *p, err = t.alloc(max(n, k)); err != nil {
			return fail(err)
		}
	}
	return t, nil
}

func (t *Trainer) Name() string { return t.name }

func (t *Trainer) enter() func() {
	t.mu.Lock()
	runtime.LockOSThread()
	cu.SetCurrentContext(t.ctx)
	return func() { runtime.UnlockOSThread(); t.mu.Unlock() }
}

func off(p cu.DevicePtr, floats int) cu.DevicePtr { return p + cu.DevicePtr(floats*4) }

// forward runs layers [from, to); train selects dropout and the saved
// state the backward pass needs.
func (t *Trainer) forward(x []float32, n, from, to int, train bool, rng *rand.Rand) error {
	if err := upload(t.acts[from], x[:n*t.shapes[from].Len()]); err != nil {
		return err
	}
	for i := from; i < to; i++ {
		l := &t.m.Spec.Layers[i]
		in, out := t.shapes[i], t.shapes[i+1]
		src, dst := t.acts[i], t.acts[i+1]
		il, ol := in.Len(), out.Len()
		var err error
		switch l.Kind {
		case model.Conv:
			err = t.convForward(l, in, out, src, dst, n, t.weights[l.Name+".weight"], t.weights[l.Name+".bias"], t.col)
		case model.ReLU:
			err = t.launch("relu", n*ol, dst, n*ol)
		case model.LRN:
			for j := 0; j < n && err == nil; j++ {
				if train {
					err = t.launch("lrn_train", il, off(src, j*il), off(dst, j*ol), off(t.scale[i], j*il), in.C, in.H*in.W, l.Size, float64(l.Alpha), float64(l.Beta), float64(l.Bias))
				} else {
					err = t.launch("lrn", il, off(src, j*il), off(dst, j*ol), in.C, in.H*in.W, l.Size, float64(l.Alpha), float64(l.Beta), float64(l.Bias))
				}
			}
		case model.MaxPool:
			for j := 0; j < n && err == nil; j++ {
				if train {
					err = t.launch("maxpool_train", ol, off(src, j*il), off(dst, j*ol), off(t.argmax[i], j*ol), in.C, in.H, in.W, out.H, out.W, l.Kernel, l.Stride, l.Pad)
				} else {
					err = t.launch("maxpool", ol, off(src, j*il), off(dst, j*ol), in.C, in.H, in.W, out.H, out.W, l.Kernel, l.Stride, l.Pad)
				}
			}
		case model.Dropout:
			if train && l.P > 0 {
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
				if err = upload(t.mask[i], mask); err == nil {
					err = t.launch("mul", n*il, dst, t.mask[i], n*il)
				}
			}
		case model.FC:
			w, bias := t.weights[l.Name+".weight"], t.weights[l.Name+".bias"]
			if err = t.launch("fill_cols", n*l.Out, dst, bias, n, l.Out); err == nil {
				err = t.sgemm(false, true, n, l.Out, il, src, il, w, il, 1, dst, l.Out)
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
				if err = t.launch("bias_grad_rows", l.Out, dyj, gb, l.Out, p); err != nil {
					break
				}
				for g := 0; g < l.Groups && err == nil; g++ {
					dyg := off(dyj, g*coutG*p)
					if err = t.launch("im2col", kk*p, xj, in.H, in.W, g*cinG, cinG, l.Kernel, l.Stride, l.Pad, out.H, out.W, t.col); err != nil {
						break
					}
					if err = t.sgemm(false, true, coutG, kk, p, dyg, p, t.col, p, 1, off(gw, g*coutG*kk), kk); err != nil || !needDx {
						continue
					}
					if err = t.sgemm(true, false, kk, p, coutG, off(w, g*coutG*kk), kk, dyg, p, 0, t.col, p); err == nil {
						err = t.launch("col2im", cinG*in.H*in.W, t.col, in.H, in.W, g*cinG, cinG, l.Kernel, l.Stride, l.Pad, out.H, out.W, dxj)
					}
				}
			}
		case model.ReLU:
			err = t.launch("relu_bwd", n*ol, t.acts[i+1], dy, n*ol)
		case model.LRN:
			if needDx {
				for j := 0; j < n && err == nil; j++ {
					s := j * il
					err = t.launch("lrn_bwd", il, off(t.acts[i], s), off(t.acts[i+1], s), off(t.scale[i], s), off(dy, s), off(dx, s), in.C, in.H*in.W, l.Size, float64(l.Alpha), float64(l.Beta))
				}
			}
		case model.MaxPool:
			if needDx {
				if err = t.launch("fill", n*il, dx, n*il, 0.0); err != nil {
					break
				}
				for j := 0; j < n && err == nil; j++ {
					err = t.launch("maxpool_bwd", ol, off(dy, j*ol), off(t.argmax[i], j*ol), off(dx, j*il), ol)
				}
			}
		case model.Dropout:
			if l.P > 0 {
				err = t.launch("mul", n*il, dy, t.mask[i], n*il)
			}
		case model.FC:
			w := t.weights[l.Name+".weight"]
			gw, gb := t.grads[l.Name+".weight"], t.grads[l.Name+".bias"]
			if err = t.launch("bias_grad_cols", l.Out, dy, gb, n, l.Out); err == nil {
				err = t.sgemm(true, false, l.Out, il, n, dy, l.Out, t.acts[i], il, 1, gw, il)
			}
			if err == nil && needDx {
				err = t.sgemm(false, false, n, il, l.Out, dy, l.Out, w, il, 0, dx, il)
			}
		}
		if err != nil {
			return fmt.Errorf("backward layer %d (%s): %w", i, l.Kind, err)
		}
	}
	return nil
}

// Step runs one batch entering at layer from, trains layers from first
// on, and applies SGD with learning rate lr. dropoutSeed seeds the masks
// exactly as the CPU path does.
func (t *Trainer) Step(from int, x []float32, labels []int, first int, lr float32, rng *rand.Rand) (float64, int, error) {
	defer t.enter()()
	n, k := len(labels), t.m.Spec.Classes
	if n == 0 || n > t.cap {
		return 0, 0, fmt.Errorf("batch of %d images, trainer holds 1..%d", n, t.cap)
	}
	L := len(t.m.Spec.Layers)
	first = max(first, from)
	for name, g := range t.grads {
		if err := t.launch("fill", len(t.m.Params[name].Data), g, len(t.m.Params[name].Data), 0.0); err != nil {
			return 0, 0, err
		}
	}
	if err := t.forward(x, n, from, L, true, rng); err != nil {
		return 0, 0, err
	}
	lab := make([]int32, n)
	for i, y := range labels {
		if y < 0 || y >= k {
			return 0, 0, fmt.Errorf("label %d of image %d is outside 0..%d", y, i, k-1)
		}
		lab[i] = int32(y)
	}
	if err := cu.MemcpyHtoD(t.labels, unsafe.Pointer(&lab[0]), int64(n*4)); err != nil {
		return 0, 0, err
	}
	if err := t.launch("softmax_ce", n, t.acts[L], t.labels, t.dacts[L], t.loss, t.correct, n, k); err != nil {
		return 0, 0, err
	}
	if err := t.backward(n, first); err != nil {
		return 0, 0, err
	}
	for name, p := range t.m.Params {
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
		if err := t.launch("sgd", len(p.Data), t.weights[name], t.grads[name], t.velocity[name], len(p.Data),
			float64(lr*mult), float64(t.opt.Momentum), decay); err != nil {
			return 0, 0, err
		}
	}
	losses, corr := make([]float32, n), make([]float32, n)
	if err := download(losses, t.loss); err != nil {
		return 0, 0, err
	}
	if err := download(corr, t.correct); err != nil {
		return 0, 0, err
	}
	var loss float64
	correct := 0
	for i := range losses {
		loss += float64(losses[i])
		correct += int(corr[i])
	}
	return loss / float64(n), correct, cu.Synchronize()
}

// Logits runs layers [from, end) in eval mode.
func (t *Trainer) Logits(from int, x []float32, n int) ([]float32, error) {
	defer t.enter()()
	L := len(t.m.Spec.Layers)
	if err := t.forward(x, n, from, L, false, nil); err != nil {
		return nil, err
	}
	out := make([]float32, n*t.m.Spec.Classes)
	return out, download(out, t.acts[L])
}

// Features runs layers [0, to) in eval mode.
func (t *Trainer) Features(x []float32, n, to int) ([]float32, error) {
	defer t.enter()()
	if err := t.forward(x, n, 0, to, false, nil); err != nil {
		return nil, err
	}
	out := make([]float32, n*t.shapes[to].Len())
	return out, download(out, t.acts[to])
}

// Sync copies weights into the model and momentum into velocity.
func (t *Trainer) Sync(velocity map[string][]float32) error {
	defer t.enter()()
	for name, p := range t.m.Params {
		if err := download(p.Data, t.weights[name]); err != nil {
			return err
		}
		if v, ok := velocity[name]; ok && len(v) == len(p.Data) {
			if err := download(v, t.velocity[name]); err != nil {
				return err
			}
		}
	}
	return nil
}

// Close frees the device memory.
func (t *Trainer) Close() error {
	defer t.enter()()
	t.release()
	return nil
}
