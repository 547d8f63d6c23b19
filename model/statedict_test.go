package model

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nlpodyssey/safetensors"
)

func TestImportStateDict(t *testing.T) {
	src, _ := NewRandom(TorchVision, 1000, 3)
	views := map[string]F32View{}
	for name, p := range src.Params {
		shape := make([]uint64, len(p.Shape))
		for i, d := range p.Shape {
			shape[i] = uint64(d)
		}
		views[name] = F32View{shape, p.Data}
	}
	p := filepath.Join(t.TempDir(), "alexnet.safetensors")
	f, _ := os.Create(p)
	if err := safetensors.SerializeToWriter(views, nil, f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	m, err := ImportStateDict(p, TorchVision, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Spec.Classes != 1000 || m.Meta.Labels[999] != "class_999" {
		t.Fatalf("classes %d labels %q", m.Spec.Classes, m.Meta.Labels[999])
	}
	for name, q := range src.Params {
		for i := range q.Data {
			if m.Params[name].Data[i] != q.Data[i] {
				t.Fatalf("%s[%d] changed", name, i)
			}
		}
	}
	if _, err := ImportStateDict(p, BVLC, nil); err == nil || !strings.Contains(err.Error(), "shape") {
		t.Errorf("torchvision weights as BVLC: %v", err)
	}
	for h, want := range map[uint16]float32{0x3c00: 1, 0xc000: -2, 0x3555: 0.33325195, 0x0001: 5.9604645e-08, 0x7bff: 65504} {
		if got := f16to32(h); got != want {
			t.Errorf("f16 %#x = %g, want %g", h, got, want)
		}
	}
}
