package onnx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// A minimal ONNX protobuf codec: just the messages and fields an AlexNet
// needs (onnx.proto field numbers). Lengths are checked against the input
// before anything is allocated, so a hostile file cannot make us allocate
// more than it holds.

type onnxModel struct {
	IRVersion int64
	Opset     int64
	Producer  string
	Graph     onnxGraph
	Meta      map[string]string
}

type onnxGraph struct {
	Name    string
	Nodes   []onnxNode
	Inits   []onnxTensor
	Inputs  []onnxValue
	Outputs []onnxValue
}

type onnxNode struct {
	Name, Op string
	Inputs   []string
	Outputs  []string
	Attrs    map[string]onnxAttr
}

type onnxAttr struct {
	F      float32
	I      int64
	S      []byte
	Ints   []int64
	Floats []float32
	Kind   int // 1 float, 2 int, 3 string, 4 tensor, 6 floats, 7 ints
	T      *onnxTensor
}

type onnxTensor struct {
	Name     string
	Dims     []int64
	DataType int32 // 1 = FLOAT, 7 = INT64
	Raw      []byte
	Floats   []float32
	Int64s   []int64
	External map[string]string
	Location int32 // 1 = EXTERNAL
}

type onnxValue struct {
	Name  string
	Elem  int32
	Shape []onnxDim
}

type onnxDim struct {
	Value int64
	Param string
}

var errTruncated = errors.New("truncated protobuf")

// fields walks the fields of one message.
func fields(b []byte, f func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("bad field tag: %w", protowire.ParseError(n))
		}
		b = b[n:]
		var (
			v []byte
			x uint64
		)
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var u uint32
			u, n = protowire.ConsumeFixed32(b)
			x = uint64(u)
		case protowire.Fixed64Type:
			x, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := f(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}

// int64s reads a repeated int64 field, packed or not.
func appendInt64s(dst []int64, typ protowire.Type, v []byte, x uint64) ([]int64, error) {
	if typ == protowire.VarintType {
		return append(dst, int64(x)), nil
	}
	for len(v) > 0 {
		u, n := protowire.ConsumeVarint(v)
		if n < 0 {
			return nil, errTruncated
		}
		dst = append(dst, int64(u))
		v = v[n:]
	}
	return dst, nil
}

func appendFloats(dst []float32, typ protowire.Type, v []byte, x uint64) ([]float32, error) {
	if typ == protowire.Fixed32Type {
		return append(dst, math.Float32frombits(uint32(x))), nil
	}
	if len(v)%4 != 0 {
		return nil, errTruncated
	}
	for i := 0; i < len(v); i += 4 {
		dst = append(dst, math.Float32frombits(binary.LittleEndian.Uint32(v[i:])))
	}
	return dst, nil
}

func parseONNX(b []byte) (*onnxModel, error) {
	m := &onnxModel{Meta: map[string]string{}}
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case 1:
			m.IRVersion = int64(x)
		case 2:
			m.Producer = string(v)
		case 7:
			return parseGraph(v, &m.Graph)
		case 8:
			var domain string
			var ver int64
			if err := fields(v, func(n protowire.Number, _ protowire.Type, v []byte, x uint64) error {
				if n == 1 {
					domain = string(v)
				} else if n == 2 {
					ver = int64(x)
				}
				return nil
			}); err != nil {
				return err
			}
			if domain == "" || domain == "ai.onnx" {
				m.Opset = ver
			}
		case 14:
			k, val, err := parseKV(v)
			if err != nil {
				return err
			}
			m.Meta[k] = val
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(m.Graph.Nodes) == 0 {
		return nil, errors.New("no graph nodes: not an ONNX model")
	}
	return m, nil
}

func parseKV(b []byte) (string, string, error) {
	var k, v string
	err := fields(b, func(n protowire.Number, _ protowire.Type, b []byte, _ uint64) error {
		if n == 1 {
			k = string(b)
		} else if n == 2 {
			v = string(b)
		}
		return nil
	})
	return k, v, err
}

func parseGraph(b []byte, g *onnxGraph) error {
	return fields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case 1:
			n, err := parseNode(v)
			if err != nil {
				return err
			}
			g.Nodes = append(g.Nodes, n)
		case 2:
			g.Name = string(v)
		case 5:
			t, err := parseTensor(v)
			if err != nil {
				return err
			}
			g.Inits = append(g.Inits, t)
		case 11, 12:
			val, err := parseValue(v)
			if err != nil {
				return err
			}
			if num == 11 {
				g.Inputs = append(g.Inputs, val)
			} else {
				g.Outputs = append(g.Outputs, val)
			}
		}
		return nil
	})
}

func parseNode(b []byte) (onnxNode, error) {
	n := onnxNode{Attrs: map[string]onnxAttr{}}
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case 1:
			n.Inputs = append(n.Inputs, string(v))
		case 2:
			n.Outputs = append(n.Outputs, string(v))
		case 3:
			n.Name = string(v)
		case 4:
			n.Op = string(v)
		case 5:
			name, a, err := parseAttr(v)
			if err != nil {
				return err
			}
			n.Attrs[name] = a
		}
		return nil
	})
	return n, err
}

func parseAttr(b []byte) (string, onnxAttr, error) {
	var name string
	var a onnxAttr
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		var err error
		switch num {
		case 1:
			name = string(v)
		case 2:
			a.F, a.Kind = math.Float32frombits(uint32(x)), 1
		case 3:
			a.I, a.Kind = int64(x), 2
		case 4:
			a.S, a.Kind = v, 3
		case 5:
			t, err := parseTensor(v)
			if err != nil {
				return err
			}
			a.T, a.Kind = &t, 4
		case 7:
			a.Floats, err = appendFloats(a.Floats, typ, v, x)
			a.Kind = 6
		case 8:
			a.Ints, err = appendInt64s(a.Ints, typ, v, x)
			a.Kind = 7
		}
		return err
	})
	return name, a, err
}

func parseTensor(b []byte) (onnxTensor, error) {
	var t onnxTensor
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		var err error
		switch num {
		case 1:
			t.Dims, err = appendInt64s(t.Dims, typ, v, x)
		case 2:
			t.DataType = int32(x)
		case 4:
			t.Floats, err = appendFloats(t.Floats, typ, v, x)
		case 7:
			t.Int64s, err = appendInt64s(t.Int64s, typ, v, x)
		case 8:
			t.Name = string(v)
		case 9:
			t.Raw = v
		case 13:
			k, val, e := parseKV(v)
			if t.External == nil {
				t.External = map[string]string{}
			}
			t.External[k] = val
			err = e
		case 14:
			t.Location = int32(x)
		}
		return err
	})
	return t, err
}

func parseValue(b []byte) (onnxValue, error) {
	var val onnxValue
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case 1:
			val.Name = string(v)
		case 2: // TypeProto
			return fields(v, func(n protowire.Number, _ protowire.Type, v []byte, _ uint64) error {
				if n != 1 { // tensor_type
					return nil
				}
				return fields(v, func(n protowire.Number, _ protowire.Type, v []byte, x uint64) error {
					switch n {
					case 1:
						val.Elem = int32(x)
					case 2:
						return fields(v, func(n protowire.Number, _ protowire.Type, v []byte, _ uint64) error {
							if n != 1 {
								return nil
							}
							var d onnxDim
							err := fields(v, func(n protowire.Number, _ protowire.Type, v []byte, x uint64) error {
								if n == 1 {
									d.Value = int64(x)
								} else if n == 2 {
									d.Param = string(v)
								}
								return nil
							})
							val.Shape = append(val.Shape, d)
							return err
						})
					}
					return nil
				})
			})
		}
		return nil
	})
	return val, err
}

// --- encoding ---

type pbuf []byte

func (p pbuf) bytes(num protowire.Number, v []byte) pbuf {
	p = protowire.AppendTag(p, num, protowire.BytesType)
	return protowire.AppendBytes(p, v)
}
func (p pbuf) str(num protowire.Number, s string) pbuf { return p.bytes(num, []byte(s)) }
func (p pbuf) varint(num protowire.Number, v int64) pbuf {
	p = protowire.AppendTag(p, num, protowire.VarintType)
	return protowire.AppendVarint(p, uint64(v))
}
func (p pbuf) float(num protowire.Number, f float32) pbuf {
	p = protowire.AppendTag(p, num, protowire.Fixed32Type)
	return protowire.AppendFixed32(p, math.Float32bits(f))
}
func (p pbuf) packedInts(num protowire.Number, vs []int64) pbuf {
	var inner []byte
	for _, v := range vs {
		inner = protowire.AppendVarint(inner, uint64(v))
	}
	return p.bytes(num, inner)
}
