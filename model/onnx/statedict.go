package onnx

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"

	"github.com/nlpodyssey/safetensors"

	"github.com/leafwatch/leafwatch/internal/half"
	"github.com/leafwatch/leafwatch/model"
)

// ImportStateDict reads a torchvision AlexNet state dict saved with
// safetensors (`features.0.weight` … `classifier.6.bias`, F32, F16 or BF16)
// and returns a model. The class count comes from the last layer; labels
// may be nil (then class_0 …).
func ImportStateDict(path string, v model.Variant, labels []string) (*model.Model, error) {
	buf, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	st, err := safetensors.Deserialize(buf)
	if err != nil {
		return nil, fmt.Errorf("import %s: not a safetensors file: %v", path, err)
	}
	last, ok := st.Tensor("classifier.6.weight")
	if !ok {
		return nil, fmt.Errorf("import %s: no classifier.6.weight: not a torchvision AlexNet state dict (tensors: %s)", path, strings.Join(first(st.Names(), 6), ", "))
	}
	classes := int(last.Shape()[0])
	spec, err := model.NewSpec(v, classes)
	if err != nil {
		return nil, err
	}
	want, err := spec.Params()
	if err != nil {
		return nil, err
	}
	params := map[string]*model.Tensor{}
	for _, p := range want {
		tv, ok := st.Tensor(p.Name)
		if !ok {
			return nil, fmt.Errorf("import %s: missing tensor %q", path, p.Name)
		}
		shape := make([]int, len(tv.Shape()))
		for i, d := range tv.Shape() {
			shape[i] = int(d)
		}
		if !slices.Equal(shape, p.Shape) {
			return nil, fmt.Errorf("import %s: tensor %q has shape %v, the %s AlexNet needs %v", path, p.Name, shape, v, p.Shape)
		}
		t := model.NewTensor(shape...)
		raw := tv.Data()
		switch tv.DType() {
		case safetensors.F32:
			for i := range t.Data {
				t.Data[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
			}
		case safetensors.F16:
			for i := range t.Data {
				t.Data[i] = half.ToFloat32(binary.LittleEndian.Uint16(raw[2*i:]))
			}
		case safetensors.BF16:
			for i := range t.Data {
				t.Data[i] = half.BF16ToFloat32(binary.LittleEndian.Uint16(raw[2*i:]))
			}
		default:
			return nil, fmt.Errorf("import %s: tensor %q is %v; F32, F16 or BF16 expected", path, p.Name, tv.DType())
		}
		params[p.Name] = t
	}
	meta := model.DefaultMetadata(v)
	meta.Labels = labels
	meta.Source = "torchvision state dict " + path
	return model.New(spec, params, meta)
}

func first(s []string, n int) []string { return s[:min(n, len(s))] }
