package onnx

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"github.com/leafwatch/leafwatch/model"
)

// ONNX export and import. The exporter writes opset 13 with a named input
// ("input", dynamic batch) and output ("probabilities"), eval mode (no
// Dropout), and the labels and preprocessing in metadata_props. The
// importer recognises the torchvision AlexNet export and the BVLC AlexNet
// of the ONNX model zoo and refuses anything else, naming the node.

const (
	onnxInput  = "input"
	onnxOutput = "probabilities"
)

func attrInts(name string, vs ...int64) []byte {
	var a pbuf
	a = a.str(1, name).varint(20, 7).packedInts(8, vs)
	return a
}

func attrInt(name string, v int64) []byte {
	var a pbuf
	return a.str(1, name).varint(20, 2).varint(3, v)
}

func attrFloat(name string, f float32) []byte {
	var a pbuf
	return a.str(1, name).varint(20, 1).float(2, f)
}

func nodePB(op, name string, in, out []string, attrs ...[]byte) []byte {
	var n pbuf
	for _, s := range in {
		n = n.str(1, s)
	}
	for _, s := range out {
		n = n.str(2, s)
	}
	n = n.str(3, name).str(4, op)
	for _, a := range attrs {
		n = n.bytes(5, a)
	}
	return n
}

func tensorPB(name string, t *model.Tensor) []byte {
	var p pbuf
	dims := make([]int64, len(t.Shape))
	for i, d := range t.Shape {
		dims[i] = int64(d)
	}
	p = p.packedInts(1, dims).varint(2, 1).str(8, name)
	raw := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(t.Data))), len(t.Data)*4)
	return p.bytes(9, raw)
}

func valueInfoPB(name string, dims ...any) []byte {
	var shape pbuf
	for _, d := range dims {
		var dim pbuf
		switch v := d.(type) {
		case int:
			dim = dim.varint(1, int64(v))
		case string:
			dim = dim.str(2, v)
		}
		shape = shape.bytes(1, dim)
	}
	var tt pbuf
	tt = tt.varint(1, 1).bytes(2, shape)
	var typ pbuf
	typ = typ.bytes(1, tt)
	var vi pbuf
	return vi.str(1, name).bytes(2, typ)
}

// Export encodes the model as an ONNX file.
func Export(m *model.Model) ([]byte, error) {
	if err := m.Whole("export ONNX"); err != nil {
		return nil, err
	}
	var g pbuf
	g = g.str(2, "leafwatch_alexnet_"+string(m.Spec.Variant))
	cur := onnxInput
	flattened := false
	for i, l := range m.Spec.Layers {
		out := fmt.Sprintf("t%d_%s", i, l.Kind)
		name := fmt.Sprintf("%s_%d", l.Kind, i)
		switch l.Kind {
		case model.Conv:
			w, b := l.Name+".weight", l.Name+".bias"
			p := int64(l.Pad)
			g = g.bytes(1, nodePB("Conv", name, []string{cur, w, b}, []string{out},
				attrInts("kernel_shape", int64(l.Kernel), int64(l.Kernel)), attrInts("strides", int64(l.Stride), int64(l.Stride)),
				attrInts("pads", p, p, p, p), attrInts("dilations", 1, 1), attrInt("group", int64(l.Groups))))
		case model.ReLU:
			g = g.bytes(1, nodePB("Relu", name, []string{cur}, []string{out}))
		case model.LRN:
			g = g.bytes(1, nodePB("LRN", name, []string{cur}, []string{out},
				attrInt("size", int64(l.Size)), attrFloat("alpha", l.Alpha), attrFloat("beta", l.Beta), attrFloat("bias", l.Bias)))
		case model.MaxPool:
			ceil := int64(0)
			if l.CeilMode {
				ceil = 1
			}
			p := int64(l.Pad)
			g = g.bytes(1, nodePB("MaxPool", name, []string{cur}, []string{out},
				attrInts("kernel_shape", int64(l.Kernel), int64(l.Kernel)), attrInts("strides", int64(l.Stride), int64(l.Stride)),
				attrInts("pads", p, p, p, p), attrInt("ceil_mode", ceil)))
		case model.Dropout:
			continue // inference graph
		case model.FC:
			if !flattened {
				fo := fmt.Sprintf("t%d_flatten", i)
				g = g.bytes(1, nodePB("Flatten", fmt.Sprintf("flatten_%d", i), []string{cur}, []string{fo}, attrInt("axis", 1)))
				cur, flattened = fo, true
			}
			g = g.bytes(1, nodePB("Gemm", name, []string{cur, l.Name + ".weight", l.Name + ".bias"}, []string{out},
				attrFloat("alpha", 1), attrFloat("beta", 1), attrInt("transB", 1)))
		}
		cur = out
	}
	g = g.bytes(1, nodePB("Softmax", "softmax", []string{cur}, []string{onnxOutput}, attrInt("axis", 1)))
	ps, err := m.Spec.Params()
	if err != nil {
		return nil, err
	}
	for _, p := range ps {
		g = g.bytes(5, tensorPB(p.Name, m.Params[p.Name]))
	}
	s := m.Spec.InputSize
	g = g.bytes(11, valueInfoPB(onnxInput, "batch", 3, s, s))
	g = g.bytes(12, valueInfoPB(onnxOutput, "batch", m.Spec.Classes))

	var mp pbuf
	mp = mp.varint(1, 8).str(2, "leafwatch").str(3, strconv.Itoa(model.FormatVersion))
	var opset pbuf
	opset = opset.str(1, "").varint(2, 13)
	mp = mp.bytes(8, opset).bytes(7, g)
	labels, _ := json.Marshal(m.Meta.Labels)
	mean, _ := json.Marshal(m.Meta.Mean)
	std, _ := json.Marshal(m.Meta.Std)
	meta := [][2]string{{"leafwatch.format", model.FormatName}, {"leafwatch.variant", string(m.Spec.Variant)}, {"labels", string(labels)},
		{"input_size", strconv.Itoa(s)}, {"resize", strconv.Itoa(m.Meta.Resize)}, {"mean", string(mean)}, {"std", string(std)},
		{"channel_order", "RGB"}, {"pixel_scale", "input = (pixel/255 - mean) / std"}, {"model_version", m.Meta.Version}}
	for _, kv := range meta {
		var e pbuf
		mp = mp.bytes(14, e.str(1, kv[0]).str(2, kv[1]))
	}
	return mp, nil
}

// Save writes the ONNX export to path.
func Save(m *model.Model, path string) error {
	b, err := Export(m)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// Import reads an ONNX AlexNet (weights inline or as external data
// beside the file).
func Import(path string) (*model.Model, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("onnx import: %w", err)
	}
	m, err := Decode(b, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("onnx import %s: %w", path, err)
	}
	m.Meta.Source = "ONNX " + filepath.Base(path)
	return m, nil
}

type convSeen struct {
	node                string
	w, b                *model.Tensor
	kernel, stride, pad int
	groups              int
}

// Decode maps an ONNX AlexNet graph to a model. dir resolves external
// data ("" refuses it).
func Decode(b []byte, dir string) (*model.Model, error) {
	om, err := parseONNX(b)
	if err != nil {
		return nil, fmt.Errorf("not a readable ONNX file: %w", err)
	}
	g, err := walkGraph(om, dir)
	if err != nil {
		return nil, err
	}
	if len(g.convs) != 5 || len(g.fcs) != 3 {
		return nil, fmt.Errorf("found %d convolutions and %d fully connected layers; AlexNet has 5 and 3", len(g.convs), len(g.fcs))
	}
	v := model.TorchVision
	if len(g.lrns) > 0 || g.convs[1].groups > 1 {
		v = model.BVLC
	}
	spec, err := model.NewSpec(v, g.fcs[2][0].Shape[0])
	if err != nil {
		return nil, err
	}
	params, err := g.params(spec)
	if err != nil {
		return nil, err
	}
	meta, err := metadataOf(om, v)
	if err != nil {
		return nil, err
	}
	if v == model.BVLC && om.Meta["channel_order"] != "RGB" {
		// Caffe models take BGR; Leafwatch feeds RGB: flip conv1's input channels.
		flipInputChannels(params["features.0.weight"])
	}
	m, err := model.New(spec, params, meta)
	if err != nil {
		return nil, err
	}
	if d := g.declared; len(d) == 4 && d[2].Value > 0 && int(d[2].Value) != spec.InputSize {
		// The model zoo's bvlcalexnet declares 224×224 and pads its pools
		// at the end to reach 6×6; Caffe's own AlexNet, which Leafwatch
		// runs, takes 227×227 and gets there with ceil-mode pools.
		m.Notes = append(m.Notes, fmt.Sprintf("the ONNX graph declares a %d×%d input; Leafwatch's %s AlexNet runs these weights at %d×%d (the checkpoint's input size), so outputs differ slightly from an ONNX runtime fed %d×%d",
			d[2].Value, d[3].Value, v, spec.InputSize, spec.InputSize, d[2].Value, d[3].Value))
	}
	return m, nil
}

// graphSeen is what walking an AlexNet's node chain found, in order.
type graphSeen struct {
	convs    []convSeen
	fcs      [][2]*model.Tensor // weight, bias
	lrns     []model.Layer
	pools    []model.Layer
	declared []onnxDim // the data input's declared shape

	inits     map[string]*onnxTensor
	constants map[string]bool
	dir       string
}

// walkGraph follows the single chain of nodes from the data input,
// collecting the layers that carry weights or settings.
func walkGraph(om *onnxModel, dir string) (*graphSeen, error) {
	g := &graphSeen{inits: map[string]*onnxTensor{}, constants: map[string]bool{}, dir: dir}
	for i := range om.Graph.Inits {
		g.inits[om.Graph.Inits[i].Name] = &om.Graph.Inits[i]
	}
	cur := ""
	for _, in := range om.Graph.Inputs {
		if g.inits[in.Name] == nil {
			cur, g.declared = in.Name, in.Shape
			break
		}
	}
	if cur == "" {
		return nil, errors.New("graph has no data input")
	}
	done := false
	for _, n := range om.Graph.Nodes {
		if n.Op == "Constant" {
			for _, o := range n.Outputs {
				g.constants[o] = true
			}
			continue
		}
		if done {
			return nil, fmt.Errorf("node %q (%s) follows the Softmax: not an AlexNet", n.Name, n.Op)
		}
		if len(n.Inputs) == 0 || n.Inputs[0] != cur || len(n.Outputs) == 0 {
			return nil, fmt.Errorf("node %q (%s) is not on the single chain an AlexNet is (expects input %q)", n.Name, n.Op, cur)
		}
		var err error
		if done, err = g.node(n); err != nil {
			return nil, err
		}
		cur = n.Outputs[0]
	}
	return g, nil
}

// node takes one node of the chain; done reports the closing Softmax.
func (g *graphSeen) node(n onnxNode) (done bool, err error) {
	switch n.Op {
	case "Conv":
		c, err := g.conv(n)
		if err != nil {
			return false, err
		}
		g.convs = append(g.convs, c)
	case "Relu", "Dropout", "Identity", "Flatten", "Reshape":
		if n.Op == "Reshape" && len(n.Inputs) > 1 && g.inits[n.Inputs[1]] == nil && !g.constants[n.Inputs[1]] {
			return false, fmt.Errorf("node %q (Reshape): shape %q is computed in the graph", n.Name, n.Inputs[1])
		}
	case "LRN":
		l := model.Layer{Kind: model.LRN, Name: n.Name, Size: int(n.Attrs["size"].I), Alpha: 1e-4, Beta: 0.75, Bias: 1}
		if a, ok := n.Attrs["alpha"]; ok {
			l.Alpha = a.F
		}
		if a, ok := n.Attrs["beta"]; ok {
			l.Beta = a.F
		}
		if a, ok := n.Attrs["bias"]; ok {
			l.Bias = a.F
		}
		g.lrns = append(g.lrns, l)
	case "MaxPool":
		l := model.Layer{Kind: model.MaxPool, Name: n.Name, Kernel: int(first64(n.Attrs["kernel_shape"].Ints)), Stride: int(first64(n.Attrs["strides"].Ints)), CeilMode: n.Attrs["ceil_mode"].I == 1}
		g.pools = append(g.pools, l)
	case "AveragePool":
		// torchvision's AdaptiveAvgPool2d((6,6)) is exported as a 1×1 pool at 224×224.
		if first64(n.Attrs["kernel_shape"].Ints) != 1 {
			return false, fmt.Errorf("node %q (AveragePool): a %v pool does not fit an AlexNet", n.Name, n.Attrs["kernel_shape"].Ints)
		}
	case "Gemm":
		fc, err := g.gemm(n)
		if err != nil {
			return false, err
		}
		g.fcs = append(g.fcs, fc)
	case "Softmax":
		return true, nil
	default:
		return false, fmt.Errorf("node %q: op %s does not fit an AlexNet (expected Conv, Relu, LRN, MaxPool, Flatten/Reshape, Gemm, Dropout, Softmax)", n.Name, n.Op)
	}
	return false, nil
}

// weight reads a node's i-th input, which must be an initializer (nil when
// the input is absent).
func (g *graphSeen) weight(n onnxNode, i int) (*model.Tensor, error) {
	if i >= len(n.Inputs) || n.Inputs[i] == "" {
		return nil, nil
	}
	t := g.inits[n.Inputs[i]]
	if t == nil {
		return nil, fmt.Errorf("node %q (%s): input %q is not an initializer", n.Name, n.Op, n.Inputs[i])
	}
	return t.toTensor(g.dir)
}

// weightAndBias reads a Conv or Gemm node's weight (required) and bias
// (nil when absent).
func (g *graphSeen) weightAndBias(n onnxNode) (*model.Tensor, *model.Tensor, error) {
	w, err := g.weight(n, 1)
	if err != nil {
		return nil, nil, err
	}
	if w == nil {
		return nil, nil, fmt.Errorf("node %q (%s): no weight", n.Name, n.Op)
	}
	b, err := g.weight(n, 2)
	if err != nil {
		return nil, nil, err
	}
	return w, b, nil
}

func (g *graphSeen) conv(n onnxNode) (convSeen, error) {
	w, bias, err := g.weightAndBias(n)
	if err != nil {
		return convSeen{}, err
	}
	if len(w.Shape) != 4 || w.Shape[2] != w.Shape[3] {
		return convSeen{}, fmt.Errorf("node %q (Conv): weight is not a square 4-D kernel", n.Name)
	}
	if bias == nil {
		bias = model.NewTensor(w.Shape[0])
	}
	c := convSeen{node: n.Name, w: w, b: bias, kernel: w.Shape[2], stride: 1, groups: 1}
	if a, ok := n.Attrs["strides"]; ok && len(a.Ints) == 2 {
		c.stride = int(a.Ints[0])
	}
	if a, ok := n.Attrs["pads"]; ok && len(a.Ints) == 4 {
		c.pad = int(a.Ints[0])
		if a.Ints[0] != a.Ints[1] || a.Ints[0] != a.Ints[2] || a.Ints[0] != a.Ints[3] {
			return convSeen{}, fmt.Errorf("node %q (Conv): asymmetric pads %v", n.Name, a.Ints)
		}
	}
	if a, ok := n.Attrs["group"]; ok {
		c.groups = int(a.I)
	}
	return c, nil
}

func (g *graphSeen) gemm(n onnxNode) ([2]*model.Tensor, error) {
	w, bias, err := g.weightAndBias(n)
	if err != nil {
		return [2]*model.Tensor{}, err
	}
	if len(w.Shape) != 2 {
		return [2]*model.Tensor{}, fmt.Errorf("node %q (Gemm): weight is not a matrix", n.Name)
	}
	if a, ok := n.Attrs["alpha"]; ok && a.F != 1 {
		return [2]*model.Tensor{}, fmt.Errorf("node %q (Gemm): alpha %v ≠ 1", n.Name, a.F)
	}
	if n.Attrs["transB"].I == 0 {
		w = transpose(w)
	}
	if bias == nil {
		bias = model.NewTensor(w.Shape[0])
	}
	return [2]*model.Tensor{w, bias}, nil
}

// params matches what the graph had with the variant's layers, checking
// every setting, and names the weights as the checkpoint does.
func (g *graphSeen) params(spec model.Spec) (map[string]*model.Tensor, error) {
	v := spec.Variant
	params := map[string]*model.Tensor{}
	ci, fi, li, pi := 0, 0, 0, 0
	for _, l := range spec.Layers {
		switch l.Kind {
		case model.LRN:
			if li >= len(g.lrns) {
				return nil, fmt.Errorf("the graph has %d LRN nodes; the %s AlexNet has 2", len(g.lrns), v)
			}
			x := g.lrns[li]
			if x.Size != l.Size || x.Alpha != l.Alpha || x.Beta != l.Beta || x.Bias != l.Bias {
				return nil, fmt.Errorf("node %q (LRN): size %d alpha %g beta %g bias %g, the %s AlexNet uses %d/%g/%g/%g",
					x.Name, x.Size, x.Alpha, x.Beta, x.Bias, v, l.Size, l.Alpha, l.Beta, l.Bias)
			}
			li++
		case model.MaxPool:
			if pi >= len(g.pools) {
				return nil, fmt.Errorf("the graph has %d max-pools; the %s AlexNet has 3", len(g.pools), v)
			}
			x := g.pools[pi]
			// Ceil and floor rounding give the same sizes at AlexNet's input size.
			if x.Kernel != l.Kernel || x.Stride != l.Stride {
				return nil, fmt.Errorf("node %q (MaxPool): kernel %d stride %d, the %s AlexNet uses %d/%d", x.Name, x.Kernel, x.Stride, v, l.Kernel, l.Stride)
			}
			pi++
		case model.Conv:
			c := g.convs[ci]
			if c.kernel != l.Kernel || c.stride != l.Stride || c.pad != l.Pad || c.groups != l.Groups {
				return nil, fmt.Errorf("node %q (Conv): kernel %d stride %d pad %d group %d, the %s AlexNet's %s has %d/%d/%d/%d",
					c.node, c.kernel, c.stride, c.pad, c.groups, v, l.Group, l.Kernel, l.Stride, l.Pad, l.Groups)
			}
			params[l.Name+".weight"], params[l.Name+".bias"] = c.w, c.b
			ci++
		case model.FC:
			params[l.Name+".weight"], params[l.Name+".bias"] = g.fcs[fi][0], g.fcs[fi][1]
			fi++
		}
	}
	if li != len(g.lrns) || pi != len(g.pools) {
		return nil, fmt.Errorf("the graph has %d LRN and %d max-pool nodes; the %s AlexNet has %d and %d", len(g.lrns), len(g.pools), v, li, pi)
	}
	return params, nil
}

// metadataOf reads what an export by Leafwatch (or anyone) put in
// metadata_props: labels, mean, std, resize.
func metadataOf(om *onnxModel, v model.Variant) (model.Metadata, error) {
	meta := model.DefaultMetadata(v)
	if om.Meta["labels"] != "" {
		if err := json.Unmarshal([]byte(om.Meta["labels"]), &meta.Labels); err != nil {
			return meta, fmt.Errorf("metadata labels: %v", err)
		}
	}
	json.Unmarshal([]byte(om.Meta["mean"]), &meta.Mean)
	json.Unmarshal([]byte(om.Meta["std"]), &meta.Std)
	if r, err := strconv.Atoi(om.Meta["resize"]); err == nil {
		meta.Resize = r
	}
	return meta, nil
}

func first64(v []int64) int64 {
	if len(v) == 0 {
		return 0
	}
	return v[0]
}

func transpose(t *model.Tensor) *model.Tensor {
	r, c := t.Shape[0], t.Shape[1]
	o := model.NewTensor(c, r)
	for i := 0; i < r; i++ {
		for j := 0; j < c; j++ {
			o.Data[j*r+i] = t.Data[i*c+j]
		}
	}
	return o
}

func flipInputChannels(w *model.Tensor) {
	cin, kk := w.Shape[1], w.Shape[2]*w.Shape[3]
	if cin != 3 {
		return
	}
	for o := 0; o < w.Shape[0]; o++ {
		base := o * cin * kk
		for k := 0; k < kk; k++ {
			w.Data[base+k], w.Data[base+2*kk+k] = w.Data[base+2*kk+k], w.Data[base+k]
		}
	}
}

// toTensor converts an initializer, bounding the element count by the data
// actually present (inline or in the external file).
func (t *onnxTensor) toTensor(dir string) (*model.Tensor, error) {
	if t.DataType != 1 {
		return nil, fmt.Errorf("initializer %q has data type %d; FLOAT (1) expected", t.Name, t.DataType)
	}
	n := int64(1)
	shape := make([]int, len(t.Dims))
	for i, d := range t.Dims {
		if d <= 0 || d > 1<<31 {
			return nil, fmt.Errorf("initializer %q: bad dimension %d", t.Name, d)
		}
		n *= d
		if n > 1<<31 {
			return nil, fmt.Errorf("initializer %q: too many elements", t.Name)
		}
		shape[i] = int(d)
	}
	raw := t.Raw
	if t.Location == 1 {
		if dir == "" {
			return nil, fmt.Errorf("initializer %q uses external data, which is not allowed here", t.Name)
		}
		loc := t.External["location"]
		if loc == "" || filepath.IsAbs(loc) || strings.Contains(loc, "..") {
			return nil, fmt.Errorf("initializer %q: external location %q must be a file beside the model", t.Name, loc)
		}
		off, _ := strconv.ParseInt(t.External["offset"], 10, 64)
		length := n * 4
		if l, err := strconv.ParseInt(t.External["length"], 10, 64); err == nil && l != length {
			return nil, fmt.Errorf("initializer %q: external length %d, shape needs %d", t.Name, l, length)
		}
		f, err := os.Open(filepath.Join(dir, loc))
		if err != nil {
			return nil, fmt.Errorf("initializer %q: external data: %w", t.Name, err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return nil, err
		}
		if off < 0 || off+length > st.Size() {
			return nil, fmt.Errorf("initializer %q: external data %s is truncated (needs bytes %d..%d of %d)", t.Name, loc, off, off+length, st.Size())
		}
		raw = make([]byte, length)
		if _, err := f.ReadAt(raw, off); err != nil {
			return nil, fmt.Errorf("initializer %q: %w", t.Name, err)
		}
	}
	out := &model.Tensor{Shape: shape}
	switch {
	case len(raw) > 0:
		if int64(len(raw)) != n*4 {
			return nil, fmt.Errorf("initializer %q: %d bytes for %d floats", t.Name, len(raw), n)
		}
		out.Data = make([]float32, n)
		for i := range out.Data {
			out.Data[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	case int64(len(t.Floats)) == n:
		out.Data = t.Floats
	default:
		return nil, fmt.Errorf("initializer %q: holds %d values, shape %v needs %d", t.Name, len(t.Floats), t.Dims, n)
	}
	return out, nil
}
