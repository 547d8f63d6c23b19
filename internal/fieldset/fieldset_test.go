package fieldset

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadRecordsNamesTheBadLine(t *testing.T) {
	good := `{"id":"a-1","camera":"a","time":"2026-12-01T10:00:00Z","top":[{"label":"x","prob":0.5}],"rules":["baseline"],"label":"x","image":"x/a-1.jpg"}`
	recs, err := ReadRecords(strings.NewReader(good + "\n\n" + good + "\n"))
	if err != nil || len(recs) != 2 || !recs[0].Baseline() || recs[0].Predicted() != "x" || !recs[0].Trainable() {
		t.Fatalf("%+v %v", recs, err)
	}
	for in, want := range map[string]string{
		good + "\n{\"id\":":           "line 2",
		good + "\n{\"camera\":\"a\"}": "line 2: a record needs id, camera and time",
	} {
		if _, err := ReadRecords(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, RecordsFile), []byte(good+"\n"), 0o644)
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "1 labelled images are missing") {
		t.Errorf("a missing image: %v", err)
	}
	os.MkdirAll(filepath.Join(dir, "x"), 0o755)
	os.WriteFile(filepath.Join(dir, "x", "a-1.jpg"), []byte("jpeg"), 0o644)
	if recs, err := Load(dir); err != nil || len(recs) != 1 {
		t.Errorf("load: %v", err)
	}
	bad := strings.Replace(good, `"image":"x/a-1.jpg"`, `"image":"../../etc/passwd"`, 1)
	os.WriteFile(filepath.Join(dir, RecordsFile), []byte(bad+"\n"), 0o644)
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "no usable image path") {
		t.Errorf("an image path outside the folder: %v", err)
	}
}

func TestValidLabel(t *testing.T) {
	for l, want := range map[string]bool{"Tomato___healthy": true, "not_a_leaf": true, "Corn_(maize)___Cercospora_leaf_spot Gray_leaf_spot": true,
		"": false, "..": false, "a/b": false, "_unlabelled": false, ".hidden": false, "x\x00": false, "a\nb": false} {
		if ValidLabel(l) != want {
			t.Errorf("ValidLabel(%q) = %v", l, !want)
		}
	}
}

// FuzzReadRecords: no samples.jsonl panics the reader, and every record it
// accepts has an id, a camera and a time.
func FuzzReadRecords(f *testing.F) {
	f.Add([]byte(`{"id":"a-1","camera":"a","time":"2026-12-01T10:00:00Z","top":[{"label":"x","prob":0.5}],"rules":["baseline"]}` + "\n"))
	f.Add([]byte("{}\n{\"id\":1}\n"))
	f.Add([]byte(strings.Repeat("[", 1000)))
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := ReadRecords(strings.NewReader(string(b)))
		if err != nil {
			return
		}
		for _, r := range recs {
			if r.ID == "" || r.Camera == "" || r.Time.IsZero() {
				t.Fatalf("accepted %+v", r)
			}
		}
	})
}
