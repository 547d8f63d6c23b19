//go:build cuda

package gpu

import (
	"fmt"

	"gorgonia.org/cu"

	"github.com/leafwatch/leafwatch/model"
)

// net is a model's weights and inference buffers on a device, shared by
// the inference Engine and the training Trainer.
type net struct {
	d       *device
	m       *model.Model
	cap     int
	shapes  []model.Shape3
	weights map[string]cu.DevicePtr
	acts    []cu.DevicePtr // acts[i]: input of layer i (in-place layers share)
	col     cu.DevicePtr
}

func inPlace(k model.LayerKind) bool { return k == model.ReLU || k == model.Dropout }

// newNet uploads m's weights and allocates activations for capacity
// images. On error the caller releases the device.
func (d *device) newNet(m *model.Model, capacity int) (*net, error) {
	shapes, err := m.Spec.Shapes()
	if err != nil {
		return nil, err
	}
	t := &net{d: d, m: m, cap: capacity, shapes: shapes, weights: map[string]cu.DevicePtr{}, acts: make([]cu.DevicePtr, len(shapes))}
	for _, name := range model.SortedParamNames(m) {
		p := m.Params[name]
		if t.weights[name], err = d.alloc(len(p.Data)); err != nil {
			return nil, err
		}
		if err := d.upload(t.weights[name], p.Data); err != nil {
			return nil, err
		}
	}
	colLen := 0
	for i, l := range m.Spec.Layers {
		in, out := shapes[i], shapes[i+1]
		if i == 0 {
			if t.acts[0], err = d.alloc(capacity * in.Len()); err != nil {
				return nil, err
			}
		}
		if inPlace(l.Kind) && i > 0 {
			t.acts[i+1] = t.acts[i]
		} else if t.acts[i+1], err = d.alloc(capacity * out.Len()); err != nil {
			return nil, err
		}
		if l.Kind == model.Conv {
			colLen = max(colLen, in.C/l.Groups*l.Kernel*l.Kernel*out.H*out.W)
		}
	}
	if t.col, err = d.alloc(colLen); err != nil {
		return nil, err
	}
	return t, nil
}

// layer runs layer i in eval mode for n images, acts[i] → acts[i+1].
func (t *net) layer(i, n int) error {
	d, l := t.d, &t.m.Spec.Layers[i]
	in, out := t.shapes[i], t.shapes[i+1]
	src, dst := t.acts[i], t.acts[i+1]
	il, ol := in.Len(), out.Len()
	var err error
	switch l.Kind {
	case model.Conv:
		err = d.convForward(l, in, out, src, dst, n, t.weights[l.Name+".weight"], t.weights[l.Name+".bias"], t.col)
	case model.ReLU:
		err = d.launch("relu", n*ol, dst, n*ol)
	case model.LRN:
		for j := 0; j < n && err == nil; j++ {
			err = d.launch("lrn", il, off(src, j*il), off(dst, j*ol), in.C, in.H*in.W, l.Size, float64(l.Alpha), float64(l.Beta), float64(l.Bias))
		}
	case model.MaxPool:
		for j := 0; j < n && err == nil; j++ {
			err = d.launch("maxpool", ol, off(src, j*il), off(dst, j*ol), in.C, in.H, in.W, out.H, out.W, l.Kernel, l.Stride, l.Pad)
		}
	case model.Dropout: // identity in eval mode
	case model.FC:
		w, bias := t.weights[l.Name+".weight"], t.weights[l.Name+".bias"]
		if err = d.launch("fill_cols", n*l.Out, dst, bias, n, l.Out); err == nil {
			err = d.sgemm(false, true, n, l.Out, il, src, il, w, il, 1, dst, l.Out)
		}
	}
	if err != nil {
		return fmt.Errorf("layer %d (%s): %w", i, l.Kind, err)
	}
	return nil
}
