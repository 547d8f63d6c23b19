//go:build cuda

package gpu

import (
	"fmt"
	"strings"

	"gorgonia.org/cu"

	"github.com/leafwatch/leafwatch/internal/half"
	"github.com/leafwatch/leafwatch/model"
)

// net is a model's weights and inference buffers on a device, shared by
// the inference Engine and the training Trainer.
type net struct {
	d       *device
	m       *model.Model
	cap     int
	prec    model.Precision // FP32, or FP16 when halves holds layers
	shapes  []model.Shape3
	weights map[string]cu.DevicePtr // fp32 parameters (a half layer's bias only)
	halves  map[string]halfWeights  // layer name → its fp16 weights
	acts    []cu.DevicePtr          // acts[i]: input of layer i (in-place layers share)
	col     cu.DevicePtr
	colH    cu.DevicePtr // im2col in halves, for the fp16 convolutions
	xH      cu.DevicePtr // a fully connected layer's input in halves
}

// halfWeights are a layer's weights as half.FromFloat32Rows makes them:
// row r (an output channel or unit) is scale[r]·w[r][·].
type halfWeights struct{ w, scale cu.DevicePtr }

func inPlace(k model.LayerKind) bool { return k == model.ReLU || k == model.Dropout }

// computesInHalf says which layers run as fp16 GEMMs under precision fp16:
// every convolution and every fully connected layer but the last, which
// stays fp32 as on the CPU engine (it is small and sets the margins
// between classes).
func computesInHalf(m *model.Model, i int) bool {
	l := m.Spec.Layers[i]
	if l.Kind == model.Conv {
		return true
	}
	if l.Kind != model.FC {
		return false
	}
	for _, later := range m.Spec.Layers[i+1:] {
		if later.Kind == model.FC {
			return true
		}
	}
	return false
}

// newNet uploads m's weights, in fp16 for the layers computesInHalf names
// when prec is FP16 (fp32 otherwise), and allocates activations for
// capacity images. On error the caller releases the device.
func (d *device) newNet(m *model.Model, capacity int, prec model.Precision) (*net, error) {
	shapes, err := m.Spec.Shapes()
	if err != nil {
		return nil, err
	}
	t := &net{d: d, m: m, cap: capacity, prec: model.FP32, shapes: shapes, weights: map[string]cu.DevicePtr{},
		halves: map[string]halfWeights{}, acts: make([]cu.DevicePtr, len(shapes))}
	if prec == model.FP16 {
		t.prec = model.FP16
		for i, l := range m.Spec.Layers {
			if computesInHalf(m, i) {
				if err := t.uploadHalf(l.Name + ".weight"); err != nil {
					return nil, err
				}
			}
		}
	}
	for _, name := range model.SortedParamNames(m) {
		if _, ok := t.halves[strings.TrimSuffix(name, ".weight")]; ok {
			continue // uploaded in halves
		}
		p := m.Params[name]
		if t.weights[name], err = d.alloc(len(p.Data)); err != nil {
			return nil, err
		}
		if err := d.upload(t.weights[name], p.Data); err != nil {
			return nil, err
		}
	}
	return t, t.allocBuffers()
}

// uploadHalf converts one weight tensor (rows = its first dimension) to
// row-scaled halves on the host and uploads them with their scales.
func (t *net) uploadHalf(name string) error {
	p := t.m.Params[name]
	rows := p.Shape[0]
	h, scale := half.FromFloat32Rows(p.Data, rows, len(p.Data)/rows)
	var hw halfWeights
	var err error
	if hw.w, err = t.d.allocHalves(len(h)); err != nil {
		return err
	}
	if err := t.d.uploadHalves(hw.w, h); err != nil {
		return err
	}
	if hw.scale, err = t.d.alloc(len(scale)); err != nil {
		return err
	}
	if err := t.d.upload(hw.scale, scale); err != nil {
		return err
	}
	t.halves[strings.TrimSuffix(name, ".weight")] = hw
	return nil
}

// allocBuffers allocates the activations and the im2col buffers.
func (t *net) allocBuffers() error {
	d, m, shapes := t.d, t.m, t.shapes
	var err error
	colLen, colHLen, xHLen := 0, 0, 0
	for i, l := range m.Spec.Layers {
		in, out := shapes[i], shapes[i+1]
		if i == 0 {
			if t.acts[0], err = d.alloc(t.cap * in.Len()); err != nil {
				return err
			}
		}
		if inPlace(l.Kind) && i > 0 {
			t.acts[i+1] = t.acts[i]
		} else if t.acts[i+1], err = d.alloc(t.cap * out.Len()); err != nil {
			return err
		}
		_, isHalf := t.halves[l.Name]
		switch {
		case l.Kind == model.Conv && isHalf:
			colHLen = max(colHLen, in.C/l.Groups*l.Kernel*l.Kernel*out.H*out.W)
		case l.Kind == model.Conv:
			colLen = max(colLen, in.C/l.Groups*l.Kernel*l.Kernel*out.H*out.W)
		case l.Kind == model.FC && isHalf:
			xHLen = max(xHLen, t.cap*in.Len())
		}
	}
	if colLen > 0 {
		if t.col, err = d.alloc(colLen); err != nil {
			return err
		}
	}
	if colHLen > 0 {
		if t.colH, err = d.allocHalves(colHLen); err != nil {
			return err
		}
	}
	if xHLen > 0 {
		if t.xH, err = d.allocHalves(xHLen); err != nil {
			return err
		}
	}
	return nil
}

// layer runs layer i in eval mode for n images, acts[i] → acts[i+1].
func (t *net) layer(i, n int) error {
	d, l := t.d, &t.m.Spec.Layers[i]
	in, out := t.shapes[i], t.shapes[i+1]
	src, dst := t.acts[i], t.acts[i+1]
	il, ol := in.Len(), out.Len()
	hw, isHalf := t.halves[l.Name]
	bias := t.weights[l.Name+".bias"]
	var err error
	switch {
	case l.Kind == model.Conv && isHalf:
		err = d.convForwardHalf(l, in, out, src, dst, n, hw, bias, t.colH)
	case l.Kind == model.Conv:
		err = d.convForward(l, in, out, src, dst, n, t.weights[l.Name+".weight"], bias, t.col)
	case l.Kind == model.ReLU:
		err = d.launch("relu", n*ol, dst, n*ol)
	case l.Kind == model.LRN:
		for j := 0; j < n && err == nil; j++ {
			err = d.launch("lrn", il, off(src, j*il), off(dst, j*ol), in.C, in.H*in.W, l.Size, float64(l.Alpha), float64(l.Beta), float64(l.Bias))
		}
	case l.Kind == model.MaxPool:
		for j := 0; j < n && err == nil; j++ {
			err = d.launch("maxpool", ol, off(src, j*il), off(dst, j*ol), in.C, in.H, in.W, out.H, out.W, l.Kernel, l.Stride, l.Pad)
		}
	case l.Kind == model.Dropout: // identity in eval mode
	case l.Kind == model.FC && isHalf:
		// y = x·Wᵀ with x and W in halves and the sums in fp32, then each
		// output unit scaled back and its bias added.
		if err = d.launch("to_half", n*il, src, t.xH, n*il); err == nil {
			if err = d.gemmHalf(false, true, n, l.Out, il, t.xH, il, hw.w, il, dst, l.Out); err == nil {
				err = d.launch("scale_bias_cols", n*l.Out, dst, hw.scale, bias, n, l.Out)
			}
		}
	case l.Kind == model.FC:
		w := t.weights[l.Name+".weight"]
		if err = d.launch("fill_cols", n*l.Out, dst, bias, n, l.Out); err == nil {
			err = d.sgemm(false, true, n, l.Out, il, src, il, w, il, 1, dst, l.Out)
		}
	}
	if err != nil {
		return fmt.Errorf("layer %d (%s): %w", i, l.Kind, err)
	}
	return nil
}
