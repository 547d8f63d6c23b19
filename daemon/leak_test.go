//go:build matprofile

package daemon

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"github.com/leafwatch/leafwatch/daemon/samples"
)

// TestNoLeakedMatsWhenNewFails: when New fails after opening cameras (here
// the decision-state folder cannot be made), the cameras it opened are
// closed: no OpenCV matrix is left behind (go test -tags matprofile).
func TestNoLeakedMatsWhenNewFails(t *testing.T) {
	dir := t.TempDir()
	ckpt := filepath.Join(dir, "model.safetensors")
	writeConstantModel(t, ckpt, 0)
	state := filepath.Join(dir, "state")
	os.MkdirAll(state, 0o750)
	os.WriteFile(filepath.Join(state, "decisions"), []byte("a file where a folder must be"), 0o640)
	yaml := fmt.Sprintf("model: %s\nstate_dir: %s\ncameras:\n  - name: a\n    source: /tmp\n  - name: b\n    source: /tmp\n", ckpt, state)
	cfg, err := ParseConfig("leak.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	before := gocv.MatProfile.Count()
	if _, err := New(cfg, quietLog()); err == nil {
		t.Fatal("New succeeded without a decision-state folder")
	}
	if after := gocv.MatProfile.Count(); after != before {
		t.Fatalf("%d Mats leaked by a failed New", after-before)
	}
}

// TestNoLeakedMatsAfterKeeping: a daemon that kept samples (the keeper
// swapped frames with the camera, encoded regions, hashed them) leaves no
// OpenCV matrix behind once it has stopped.
func TestNoLeakedMatsAfterKeeping(t *testing.T) {
	before := gocv.MatProfile.Count()
	r := keepRig(t, "")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if n, _ := r.d.store.Count(t.Context(), samples.Filter{}); n >= 6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("nothing kept")
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.stop(t)
	if after := gocv.MatProfile.Count(); after != before {
		var b bytes.Buffer
		gocv.MatProfile.WriteTo(&b, 1)
		t.Fatalf("%d Mats leaked by a daemon that kept samples:\n%s", after-before, b.String())
	}
}
