package model

import (
	"fmt"
	"math/rand/v2"
	"slices"
)

// ReplaceHead returns a copy of m whose last layer is a freshly initialised
// len(labels)-way layer. With resetPenultimate the layer before it (fc7)
// is re-initialised too, as the fine-tuning tutorial does; the PlantVillage
// paper kept it. Every other tensor is copied bit for bit.
func ReplaceHead(m *Model, labels []string, resetPenultimate bool, rng *rand.Rand) (*Model, error) {
	spec, err := NewSpec(m.Spec.Variant, len(labels))
	if err != nil {
		return nil, err
	}
	fcs := []int{}
	for i, l := range spec.Layers {
		if l.Kind == FC {
			fcs = append(fcs, i)
		}
	}
	last := spec.Layers[fcs[len(fcs)-1]].Name
	pen := spec.Layers[fcs[len(fcs)-2]].Name
	params := make(map[string]*Tensor, len(m.Params))
	for name, t := range m.Params {
		params[name] = &Tensor{Shape: slices.Clone(t.Shape), Data: slices.Clone(t.Data)}
	}
	ps, err := spec.Params()
	if err != nil {
		return nil, err
	}
	for _, p := range ps {
		if p.Name != last+".weight" && p.Name != last+".bias" {
			continue
		}
		params[p.Name] = NewTensor(p.Shape...)
	}
	// Small Gaussian for the new classifier (as Caffe's fine-tuning recipe),
	// so the first steps do not swamp the pretrained features.
	w := params[last+".weight"]
	for i := range w.Data {
		w.Data[i] = float32(rng.NormFloat64()) * 0.01
	}
	if resetPenultimate {
		InitHe(params[pen+".weight"], rng)
		clear(params[pen+".bias"].Data)
	}
	meta := m.Meta
	meta.Labels = slices.Clone(labels)
	meta.Training = nil
	meta.Source = fmt.Sprintf("%s; head replaced (%d classes)", m.Meta.Source, len(labels))
	return New(spec, params, meta)
}

// FirstLayerOfGroup returns the index of the layer a parameter group
// (conv1 … fc8) starts at.
func (m *Model) FirstLayerOfGroup(group string) (int, error) {
	i, ok := m.Spec.LayerByGroup(group)
	if !ok {
		return 0, fmt.Errorf("unknown layer group %q (groups: %v)", group, m.Spec.Groups())
	}
	return i, nil
}
