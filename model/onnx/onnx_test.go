package onnx

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/leafwatch/leafwatch/model"
)

func TestONNXRoundTripIsBitIdentical(t *testing.T) {
	for _, v := range model.Variants() {
		t.Run(string(v), func(t *testing.T) {
			m, _ := model.NewRandom(v, 38, 8)
			m.Meta.Labels = model.PlantVillageLabels()
			b1, err := Export(m)
			if err != nil {
				t.Fatal(err)
			}
			back, err := Decode(b1, "")
			if err != nil {
				t.Fatal(err)
			}
			if back.Spec.Variant != v || back.Meta.Labels[7] != m.Meta.Labels[7] || back.Meta.Mean != m.Meta.Mean {
				t.Fatalf("metadata lost: %v %q", back.Spec.Variant, back.Meta.Labels[7])
			}
			for name, p := range m.Params {
				q := back.Params[name]
				for i := range p.Data {
					if p.Data[i] != q.Data[i] {
						t.Fatalf("%s[%d] changed", name, i)
					}
				}
			}
			b2, _ := Export(back)
			// ONNX → checkpoint → ONNX gives the same file, byte for byte.
			if !bytes.Equal(b1, b2) {
				t.Fatalf("re-export differs (%d vs %d bytes)", len(b2), len(b1))
			}
		})
	}
}

// zooStyle rewrites our export as the ONNX model zoo's BVLC graph looks:
// Caffe-like names, Dropout nodes, Reshape, no Leafwatch metadata, and
// optionally external data.
func TestONNXImportExternalDataAndRefusals(t *testing.T) {
	m, _ := model.NewRandom(model.TorchVision, 5, 2)
	dir := t.TempDir()
	// External data: move every initializer's bytes to weights.bin.
	var ext bytes.Buffer
	var g pbuf
	om, _ := parseONNX(must(Export(m)))
	g = appendNodes(g, om)
	for _, it := range om.Graph.Inits {
		var p pbuf
		p = p.packedInts(1, it.Dims).varint(2, 1).str(8, it.Name).varint(14, 1)
		var kv pbuf
		p = p.bytes(13, kv.str(1, "location").str(2, "weights.bin"))
		kv = nil
		p = p.bytes(13, kv.str(1, "offset").str(2, itoa(ext.Len())))
		kv = nil
		p = p.bytes(13, kv.str(1, "length").str(2, itoa(len(it.Raw))))
		ext.Write(it.Raw)
		g = g.bytes(5, p)
	}
	g = g.bytes(11, valueInfoPB("input", "N", 3, 224, 224))
	var mp pbuf
	var opset pbuf
	mp = mp.varint(1, 7).bytes(8, opset.str(1, "").varint(2, 9)).bytes(7, g)
	os.WriteFile(filepath.Join(dir, "weights.bin"), ext.Bytes(), 0o644)
	os.WriteFile(filepath.Join(dir, "alexnet.onnx"), mp, 0o644)
	back, err := Import(filepath.Join(dir, "alexnet.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	if back.Params["classifier.6.weight"].Data[3] != m.Params["classifier.6.weight"].Data[3] {
		t.Fatal("external data not read")
	}
	// Truncated external data.
	os.WriteFile(filepath.Join(dir, "weights.bin"), ext.Bytes()[:ext.Len()/2], 0o644)
	if _, err := Import(filepath.Join(dir, "alexnet.onnx")); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("truncated external data: %v", err)
	}
	// A foreign op is refused by name.
	var bad pbuf
	bad = bad.bytes(1, nodePB("Conv", "c1", []string{"input", "w"}, []string{"y"})).bytes(1, nodePB("Sigmoid", "sig7", []string{"y"}, []string{"z"}))
	var badm pbuf
	badm = badm.bytes(7, bad.bytes(11, valueInfoPB("input", 1, 3, 224, 224)))
	if _, err := Decode(badm, ""); err == nil {
		t.Error("graph with an unknown input accepted")
	}
	for name, data := range map[string][]byte{"garbage": []byte("hello, not onnx"), "truncated": must(Export(m))[:5000], "empty": nil} {
		if _, err := Decode(data, ""); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

func TestONNXRefusesUnknownOp(t *testing.T) {
	om, _ := parseONNX(must(Export(mustModel())))
	var g pbuf
	for i, n := range om.Graph.Nodes {
		op := n.Op
		if i == 1 {
			op = "Sigmoid"
		}
		g = g.bytes(1, nodePB(op, n.Name, n.Inputs, n.Outputs))
	}
	for _, it := range om.Graph.Inits {
		var p pbuf
		g = g.bytes(5, p.packedInts(1, it.Dims).varint(2, 1).str(8, it.Name).bytes(9, it.Raw))
	}
	g = g.bytes(11, valueInfoPB("input", 1, 3, 224, 224))
	var mp pbuf
	_, err := Decode(mp.bytes(7, g), "")
	if err == nil || !strings.Contains(err.Error(), `"relu_1"`) || !strings.Contains(err.Error(), "Sigmoid") {
		t.Fatalf("error %v does not name the node and op", err)
	}
}

func mustModel() *model.Model { m, _ := model.NewRandom(model.TorchVision, 3, 1); return m }

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func itoa(n int) string { return strconv.Itoa(n) }

// FuzzDecodeONNX: no input panics the ONNX reader or makes it allocate
// beyond what the input holds.
func FuzzDecodeONNX(f *testing.F) {
	small, _ := model.NewRandom(model.TorchVision, 2, 1)
	b, _ := Export(small)
	f.Add(b[:4096])
	f.Add([]byte{0x3a, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		Decode(data, "")
	})
}

// TestONNXRefusesMismatchedLRNAndPool: LRN and pooling hyper-parameters
// are checked against the variant, not silently replaced by its defaults.
func TestONNXRefusesMismatchedLRNAndPool(t *testing.T) {
	for _, tc := range []struct{ op, attr, want string }{
		{"LRN", "size", `(LRN): size 3`},
		{"MaxPool", "strides", `(MaxPool): kernel 3 stride 1`},
	} {
		m, _ := model.NewRandom(model.BVLC, 3, 1)
		om, _ := parseONNX(must(Export(m)))
		var g pbuf
		changed := false
		for _, n := range om.Graph.Nodes {
			var attrs [][]byte
			for name, a := range n.Attrs {
				switch {
				case n.Op == tc.op && name == tc.attr && !changed:
					changed = true
					if a.Kind == 7 {
						attrs = append(attrs, attrInts(name, 1, 1))
					} else {
						attrs = append(attrs, attrInt(name, 3))
					}
				case a.Kind == 1:
					attrs = append(attrs, attrFloat(name, a.F))
				case a.Kind == 2:
					attrs = append(attrs, attrInt(name, a.I))
				case a.Kind == 7:
					attrs = append(attrs, attrInts(name, a.Ints...))
				}
			}
			g = g.bytes(1, nodePB(n.Op, n.Name, n.Inputs, n.Outputs, attrs...))
		}
		for _, it := range om.Graph.Inits {
			var p pbuf
			g = g.bytes(5, p.packedInts(1, it.Dims).varint(2, 1).str(8, it.Name).bytes(9, it.Raw))
		}
		g = g.bytes(11, valueInfoPB("input", 1, 3, 227, 227))
		var mp pbuf
		_, err := Decode(mp.bytes(7, g), "")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %s changed: error %v, want it to mention %q", tc.op, tc.attr, err, tc.want)
		}
	}
}

// TestONNXImportSaysWhenInputSizeChanges: the model zoo's bvlcalexnet
// declares a 224×224 input; the checkpoint runs the weights at 227×227 and
// the importer says so. A graph declaring the model's own size gets no note.
func TestONNXImportSaysWhenInputSizeChanges(t *testing.T) {
	m, _ := model.NewRandom(model.BVLC, 5, 2)
	om, err := parseONNX(must(Export(m)))
	if err != nil {
		t.Fatal(err)
	}
	graph := func(side int) []byte {
		g := appendNodes(nil, om)
		for _, it := range om.Graph.Inits {
			var p pbuf
			g = g.bytes(5, p.packedInts(1, it.Dims).varint(2, 1).str(8, it.Name).bytes(9, it.Raw))
		}
		g = g.bytes(11, valueInfoPB("input", "N", 3, side, side))
		var mp, opset pbuf
		return mp.varint(1, 7).bytes(8, opset.str(1, "").varint(2, 13)).bytes(7, g)
	}
	zoo, err := Decode(graph(224), "")
	if err != nil {
		t.Fatal(err)
	}
	if zoo.Spec.InputSize != 227 || len(zoo.Notes) != 1 || !strings.Contains(zoo.Notes[0], "224×224") || !strings.Contains(zoo.Notes[0], "227×227") {
		t.Errorf("input %d, notes %q", zoo.Spec.InputSize, zoo.Notes)
	}
	own, err := Decode(graph(227), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(own.Notes) != 0 {
		t.Errorf("notes for a 227×227 graph: %q", own.Notes)
	}
}

// appendNodes re-encodes a parsed graph's nodes, for tests that rebuild a
// graph around them.
func appendNodes(g pbuf, om *onnxModel) pbuf {
	for _, n := range om.Graph.Nodes {
		var attrs [][]byte
		for name, a := range n.Attrs {
			switch a.Kind {
			case 1:
				attrs = append(attrs, attrFloat(name, a.F))
			case 2:
				attrs = append(attrs, attrInt(name, a.I))
			case 7:
				attrs = append(attrs, attrInts(name, a.Ints...))
			}
		}
		g = g.bytes(1, nodePB(n.Op, n.Name, n.Inputs, n.Outputs, attrs...))
	}
	return g
}
