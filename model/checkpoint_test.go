package model

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nlpodyssey/safetensors"
)

func savedCheckpoint(t testing.TB, v Variant, classes int) (string, *Model) {
	t.Helper()
	m, err := NewRandom(v, classes, 42)
	if err != nil {
		t.Fatal(err)
	}
	m.Meta.Labels = PlantVillageLabels()[:classes]
	m.Meta.Training = &TrainingSummary{Dataset: "synthetic", Epochs: 2, ValMacroF1: 0.5}
	path := filepath.Join(t.TempDir(), "model.safetensors")
	if err := m.Save(path); err != nil {
		t.Fatal(err)
	}
	return path, m
}

func TestCheckpointRoundTrip(t *testing.T) {
	for _, v := range Variants() {
		t.Run(string(v), func(t *testing.T) {
			path, m := savedCheckpoint(t, v, 38)
			got, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			if got.Meta.Variant != v || got.Spec.Classes != 38 || got.Meta.InputSize != m.Spec.InputSize {
				t.Fatalf("metadata: %+v", got.Meta)
			}
			if strings.Join(got.Meta.Labels, "|") != strings.Join(m.Meta.Labels, "|") {
				t.Fatalf("labels changed: %q", got.Meta.Labels[:3])
			}
			if got.Meta.Training == nil || got.Meta.Training.Epochs != 2 || got.Meta.Mean != m.Meta.Mean || got.Meta.Std != m.Meta.Std {
				t.Fatalf("training/mean/std lost: %+v", got.Meta)
			}
			if got.Meta.Version == "" || got.Meta.Version != m.Meta.Version {
				t.Fatalf("version %q after load, %q after save", got.Meta.Version, m.Meta.Version)
			}
			for name, p := range m.Params {
				q := got.Params[name]
				for i := range p.Data {
					if p.Data[i] != q.Data[i] {
						t.Fatalf("%s[%d] = %g, saved %g", name, i, q.Data[i], p.Data[i])
					}
				}
			}
		})
	}
}

// rewrite builds a safetensors file from a model's tensors after edit has
// changed the tensors or metadata.
func rewrite(t *testing.T, m *Model, edit func(views map[string]F32View, md map[string]string)) []byte {
	t.Helper()
	md, err := m.headerMetadata()
	if err != nil {
		t.Fatal(err)
	}
	views := map[string]F32View{}
	for name, p := range m.Params {
		shape := make([]uint64, len(p.Shape))
		for i, d := range p.Shape {
			shape[i] = uint64(d)
		}
		views[name] = F32View{shape, p.Data}
	}
	edit(views, md)
	var buf bytes.Buffer
	if err := safetensors.SerializeToWriter(views, md, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestCheckpointRejectsBadFiles(t *testing.T) {
	path, m := savedCheckpoint(t, TorchVision, 4)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "too short"},
		{"jpeg", append([]byte{0xff, 0xd8, 0xff, 0xe0}, make([]byte, 64)...), "not a safetensors file"},
		{"text", []byte("this is a readme, not a model at all"), "not a safetensors file"},
		{"truncated-header", good[:100], "truncated"},
		{"truncated-data", good[:len(good)-1000], "truncated"},
		{"missing-tensor", rewrite(t, m, func(v map[string]F32View, md map[string]string) { delete(v, "features.3.bias") }), `missing tensor "features.3.bias"`},
		{"extra-tensor", rewrite(t, m, func(v map[string]F32View, md map[string]string) {
			v["features.99.weight"] = F32View{[]uint64{2}, []float32{1, 2}}
		}), `extra tensor "features.99.weight"`},
		{"wrong-shape", rewrite(t, m, func(v map[string]F32View, md map[string]string) {
			w := v["features.0.weight"]
			v["features.0.weight"] = F32View{[]uint64{64, 3, 121}, w.data}
		}), `tensor "features.0.weight" has shape`},
		{"labels-vs-head", rewrite(t, m, func(v map[string]F32View, md map[string]string) {
			md["labels"] = `["a","b","c","d","e"]`
		}), `tensor "classifier.6.weight" has shape [4 4096], expected [5 4096] for 5 classes`},
		{"unknown-variant", rewrite(t, m, func(v map[string]F32View, md map[string]string) { md["variant"] = "vgg16" }), `unknown AlexNet variant "vgg16"`},
		{"future-format", rewrite(t, m, func(v map[string]F32View, md map[string]string) { md["format_version"] = "7" }), "format version 7 is newer"},
		{"not-leafwatch", rewrite(t, m, func(v map[string]F32View, md map[string]string) { delete(md, "format") }), "not a Leafwatch checkpoint"},
		{"no-metadata", rewrite(t, m, func(v map[string]F32View, md map[string]string) { clear(md) }), "not a Leafwatch checkpoint"},
		{"bad-std", rewrite(t, m, func(v map[string]F32View, md map[string]string) { md["std"] = "[0.2,0,0.2]" }), "std[1]"},
		{"empty-label", rewrite(t, m, func(v map[string]F32View, md map[string]string) { md["labels"] = `["a","","c","d"]` }), "label 1 is empty"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(tc.data)
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrNotCheckpoint) {
				t.Errorf("error does not wrap ErrNotCheckpoint: %v", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

func TestLoadNamesTheFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "broken.safetensors")
	os.WriteFile(p, []byte("garbage garbage garbage"), 0o644)
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("error %v does not name %s", err, p)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "absent")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

// FuzzDecode: no input may panic the loader, and a header cannot make it
// allocate beyond what the input holds.
func FuzzDecode(f *testing.F) {
	small := rewriteSmall()
	f.Add(small)
	f.Add(small[:len(small)/2])
	f.Add([]byte{})
	hdr := make([]byte, 8)
	binary.LittleEndian.PutUint64(hdr, 1<<62)
	f.Add(append(hdr, '{', '}'))
	huge, _ := json.Marshal(map[string]any{"x": map[string]any{"dtype": "F32", "shape": []uint64{1 << 40, 1 << 40}, "data_offsets": []uint64{0, 1 << 62}}})
	binary.LittleEndian.PutUint64(hdr, uint64(len(huge)))
	f.Add(append(append([]byte{}, hdr...), huge...))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = Decode(data)
	})
}

// rewriteSmall produces a valid-looking safetensors file with Leafwatch
// metadata but an unusable tiny tensor, as a fuzz seed.
func rewriteSmall() []byte {
	md := map[string]string{"format": FormatName, "format_version": "1", "variant": "torchvision",
		"labels": `["a","b"]`, "input_size": "224", "mean": "[0,0,0]", "std": "[1,1,1]"}
	var buf bytes.Buffer
	safetensors.SerializeToWriter(map[string]F32View{"features.0.bias": {[]uint64{4}, []float32{1, 2, 3, 4}}}, md, &buf)
	return buf.Bytes()
}
