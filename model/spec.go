package model

import (
	"fmt"
	"sort"
)

// Variant names one AlexNet architecture. The variant fixes the layer
// sequence, the channel counts, the input size and how pooling rounds.
type Variant string

const (
	// TorchVision is torchvision's AlexNet: 64-192-384-256-256 channels,
	// no LRN, 224x224 input, floor-mode pooling.
	TorchVision Variant = "torchvision"
	// BVLC is the original Caffe AlexNet (bvlc_alexnet) that the PlantVillage
	// paper fine-tuned: 96-256-384-384-256 channels, grouped conv2/4/5, LRN
	// after conv1 and conv2, 227x227 input, ceil-mode pooling.
	BVLC Variant = "bvlc"
)

// Variants lists the known variants in a stable order.
func Variants() []Variant { return []Variant{TorchVision, BVLC} }

// ParseVariant turns a user-supplied name into a Variant.
func ParseVariant(s string) (Variant, error) {
	switch Variant(s) {
	case TorchVision, BVLC:
		return Variant(s), nil
	case "caffe", "bvlc_alexnet":
		return BVLC, nil
	}
	return "", fmt.Errorf("unknown AlexNet variant %q (known: torchvision, bvlc)", s)
}

// LayerKind is the type of one step of the network.
type LayerKind int

const (
	Conv LayerKind = iota
	ReLU
	LRN
	MaxPool
	Dropout
	FC
)

func (k LayerKind) String() string {
	switch k {
	case Conv:
		return "conv"
	case ReLU:
		return "relu"
	case LRN:
		return "lrn"
	case MaxPool:
		return "maxpool"
	case Dropout:
		return "dropout"
	case FC:
		return "fc"
	}
	return fmt.Sprintf("layer(%d)", int(k))
}

// Layer describes one step. Only the fields of its kind are meaningful.
type Layer struct {
	Kind LayerKind
	// Name is the torchvision-style tensor prefix ("features.0",
	// "classifier.6"); parameters are Name+".weight" and Name+".bias".
	Name string
	// Group is the freeze/learning-rate group ("conv1" … "fc8").
	Group string

	Out, Kernel, Stride, Pad, Groups int  // Conv (Out also for FC)
	CeilMode                         bool // MaxPool

	Size              int     // LRN window (channels)
	Alpha, Beta, Bias float32 // LRN: x / (Bias + Alpha/Size * sum x^2)^Beta

	P float32 // Dropout probability of dropping
}

// Spec is the full architecture for a variant and class count.
type Spec struct {
	Variant   Variant
	Classes   int
	InputSize int // square input, pixels
	Layers    []Layer
}

// NewSpec builds the architecture of a variant with the given class count.
func NewSpec(v Variant, classes int) (Spec, error) {
	if classes < 2 {
		return Spec{}, fmt.Errorf("class count %d: a classifier needs at least 2 classes", classes)
	}
	conv := func(name, group string, out, k, s, p, g int) Layer {
		return Layer{Kind: Conv, Name: name, Group: group, Out: out, Kernel: k, Stride: s, Pad: p, Groups: g}
	}
	relu := Layer{Kind: ReLU}
	fc := func(name, group string, out int) Layer { return Layer{Kind: FC, Name: name, Group: group, Out: out} }
	drop := Layer{Kind: Dropout, P: 0.5}
	switch v {
	case TorchVision:
		pool := Layer{Kind: MaxPool, Kernel: 3, Stride: 2}
		return Spec{Variant: v, Classes: classes, InputSize: 224, Layers: []Layer{
			conv("features.0", "conv1", 64, 11, 4, 2, 1), relu, pool,
			conv("features.3", "conv2", 192, 5, 1, 2, 1), relu, pool,
			conv("features.6", "conv3", 384, 3, 1, 1, 1), relu,
			conv("features.8", "conv4", 256, 3, 1, 1, 1), relu,
			conv("features.10", "conv5", 256, 3, 1, 1, 1), relu, pool,
			// torchvision's AdaptiveAvgPool2d((6,6)) is the identity at 224x224;
			// other input sizes are not supported, so it has no layer.
			drop, fc("classifier.1", "fc6", 4096), relu,
			drop, fc("classifier.4", "fc7", 4096), relu,
			fc("classifier.6", "fc8", classes),
		}}, nil
	case BVLC:
		pool := Layer{Kind: MaxPool, Kernel: 3, Stride: 2, CeilMode: true}
		lrn := Layer{Kind: LRN, Size: 5, Alpha: 1e-4, Beta: 0.75, Bias: 1}
		return Spec{Variant: v, Classes: classes, InputSize: 227, Layers: []Layer{
			conv("features.0", "conv1", 96, 11, 4, 0, 1), relu, lrn, pool,
			conv("features.4", "conv2", 256, 5, 1, 2, 2), relu, lrn, pool,
			conv("features.8", "conv3", 384, 3, 1, 1, 1), relu,
			conv("features.10", "conv4", 384, 3, 1, 1, 2), relu,
			conv("features.12", "conv5", 256, 3, 1, 1, 2), relu, pool,
			fc("classifier.1", "fc6", 4096), relu, drop,
			fc("classifier.4", "fc7", 4096), relu, drop,
			fc("classifier.6", "fc8", classes),
		}}, nil
	}
	return Spec{}, fmt.Errorf("unknown AlexNet variant %q (known: torchvision, bvlc)", v)
}

// Shape3 is a per-image activation shape (channels, height, width); fully
// connected activations have H = W = 1.
type Shape3 struct{ C, H, W int }

// Len is the number of values in one image's activation.
func (s Shape3) Len() int { return s.C * s.H * s.W }

func poolOut(in, k, s, p int, ceil bool) int {
	num := in + 2*p - k
	if num < 0 {
		return 0
	}
	if ceil {
		o := (num+s-1)/s + 1
		// Caffe/PyTorch rule: the last window must start inside the input.
		if (o-1)*s >= in+p {
			o--
		}
		return o
	}
	return num/s + 1
}

// Shapes returns the input shape of every layer followed by the output
// shape of the last one (len(Layers)+1 entries).
func (s Spec) Shapes() ([]Shape3, error) {
	return s.shapesFrom(Shape3{3, s.InputSize, s.InputSize})
}

func (s Spec) shapesFrom(in Shape3) ([]Shape3, error) {
	out := []Shape3{in}
	cur := in
	for i, l := range s.Layers {
		switch l.Kind {
		case Conv:
			if l.Groups < 1 || cur.C%l.Groups != 0 || l.Out%l.Groups != 0 {
				return nil, fmt.Errorf("layer %d (%s): %d input / %d output channels do not split into %d groups", i, l.Name, cur.C, l.Out, l.Groups)
			}
			h := poolOut(cur.H, l.Kernel, l.Stride, l.Pad, false)
			w := poolOut(cur.W, l.Kernel, l.Stride, l.Pad, false)
			cur = Shape3{l.Out, h, w}
		case MaxPool:
			cur = Shape3{cur.C, poolOut(cur.H, l.Kernel, l.Stride, l.Pad, l.CeilMode), poolOut(cur.W, l.Kernel, l.Stride, l.Pad, l.CeilMode)}
		case FC:
			cur = Shape3{l.Out, 1, 1}
		}
		if cur.H <= 0 || cur.W <= 0 {
			return nil, fmt.Errorf("layer %d (%s): input %dx%d is too small", i, l.Kind, in.H, in.W)
		}
		out = append(out, cur)
	}
	return out, nil
}

// ParamShape is the expected shape of one named parameter tensor.
type ParamShape struct {
	Name  string
	Shape []int
	Layer int // index into Spec.Layers
}

// Params lists every parameter tensor the spec needs, in layer order, with
// PyTorch/ONNX shapes: conv weight (out, in/groups, k, k), fc weight (out, in).
func (s Spec) Params() ([]ParamShape, error) {
	shapes, err := s.Shapes()
	if err != nil {
		return nil, err
	}
	var ps []ParamShape
	for i, l := range s.Layers {
		in := shapes[i]
		switch l.Kind {
		case Conv:
			ps = append(ps, ParamShape{l.Name + ".weight", []int{l.Out, in.C / l.Groups, l.Kernel, l.Kernel}, i})
			ps = append(ps, ParamShape{l.Name + ".bias", []int{l.Out}, i})
		case FC:
			ps = append(ps, ParamShape{l.Name + ".weight", []int{l.Out, in.Len()}, i})
			ps = append(ps, ParamShape{l.Name + ".bias", []int{l.Out}, i})
		}
	}
	return ps, nil
}

// Groups lists the parameter groups in network order (conv1 … fc8).
func (s Spec) Groups() []string {
	var gs []string
	for _, l := range s.Layers {
		if l.Group != "" {
			gs = append(gs, l.Group)
		}
	}
	return gs
}

// LayerByGroup returns the index of the layer owning a parameter group.
func (s Spec) LayerByGroup(group string) (int, bool) {
	for i, l := range s.Layers {
		if l.Group == group {
			return i, true
		}
	}
	return 0, false
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
