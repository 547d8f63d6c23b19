package onnx

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nlpodyssey/safetensors"

	"github.com/leafwatch/leafwatch/model"
)

func TestImportStateDict(t *testing.T) {
	src, _ := model.NewRandom(model.TorchVision, 1000, 3)
	views := map[string]model.F32View{}
	for name, p := range src.Params {
		views[name] = model.ViewOf(p.Shape, p.Data)
	}
	p := filepath.Join(t.TempDir(), "alexnet.safetensors")
	f, _ := os.Create(p)
	if err := safetensors.SerializeToWriter(views, nil, f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	m, err := ImportStateDict(p, model.TorchVision, nil)
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
	if _, err := ImportStateDict(p, model.BVLC, nil); err == nil || !strings.Contains(err.Error(), "shape") {
		t.Errorf("torchvision weights as BVLC: %v", err)
	}
}
