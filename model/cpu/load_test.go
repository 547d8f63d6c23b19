package cpu

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leafwatch/leafwatch/model"
)

// TestLoadSurvivesFileRewrites: `cp new.safetensors model.safetensors`
// while a reload reads the file truncates and rewrites it in place. Loading
// must give a model or an error, never crash the process (a mapped file
// raised SIGBUS), and never a model mixing two files.
func TestLoadSurvivesFileRewrites(t *testing.T) {
	skipEmulated(t, "file handling, the same on every architecture")
	dir := t.TempDir()
	a, _ := model.NewRandom(model.TorchVision, 3, 1)
	b, _ := model.NewRandom(model.TorchVision, 3, 2)
	pa, pb := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	if err := a.Save(pa); err != nil {
		t.Fatal(err)
	}
	if err := b.Save(pb); err != nil {
		t.Fatal(err)
	}
	ba, _ := os.ReadFile(pa)
	bb, _ := os.ReadFile(pb)
	target := filepath.Join(dir, "model.safetensors")
	os.WriteFile(target, ba, 0o644)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // cp, over and over: truncate, then write in chunks
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			src := ba
			if i%2 == 1 {
				src = bb
			}
			f, err := os.OpenFile(target, os.O_WRONLY|os.O_TRUNC, 0o644)
			if err != nil {
				continue
			}
			for off := 0; off < len(src); off += 1 << 20 {
				f.Write(src[off:min(off+1<<20, len(src))])
			}
			f.Close()
		}
	}()
	loaded, refused := 0, 0
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		m, err := model.Load(target)
		if err != nil {
			if !errors.Is(err, model.ErrNotCheckpoint) && !strings.Contains(err.Error(), "changed while it was read") {
				t.Errorf("unexpected error: %v", err)
			}
			refused++
			continue
		}
		if m.Meta.Version != a.Meta.Version && m.Meta.Version != b.Meta.Version {
			t.Errorf("loaded version %s is neither file (%s, %s)", m.Meta.Version, a.Meta.Version, b.Meta.Version)
		}
		loaded++
	}
	close(stop)
	wg.Wait()
	t.Logf("%d loads succeeded, %d refused a file being rewritten", loaded, refused)
	if refused == 0 {
		t.Log("no load overlapped a rewrite this time")
	}
}

// TestLoadVersionMatchesSave: the streaming reader hashes exactly the bytes
// Save wrote.
func TestLoadVersionMatchesSave(t *testing.T) {
	skipEmulated(t, "checkpoint hashing, the same on every architecture")
	m, _ := model.NewRandom(model.BVLC, 4, 3)
	p := filepath.Join(t.TempDir(), "m.safetensors")
	if err := m.Save(p); err != nil {
		t.Fatal(err)
	}
	l, err := model.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	buf, _ := os.ReadFile(p)
	d, err := model.Decode(buf)
	if err != nil {
		t.Fatal(err)
	}
	if l.Meta.Version != m.Meta.Version || d.Meta.Version != m.Meta.Version {
		t.Errorf("versions: saved %s, loaded %s, decoded %s", m.Meta.Version, l.Meta.Version, d.Meta.Version)
	}
	for name, p := range m.Params {
		q := l.Params[name].Data
		for i := range p.Data {
			if p.Data[i] != q[i] {
				t.Fatalf("%s[%d] differs", name, i)
			}
		}
	}
}
