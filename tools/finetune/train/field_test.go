package train

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"image/jpeg"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/leafwatch/leafwatch/internal/fieldset"
)

// writeExport writes an export folder as leafwatchd samples export does:
// n samples over cameras c1, c2 and two days, labels from classes (and
// some not_a_leaf, unsure, unlabelled), every third kept by the baseline
// rule. The kept-with answer is the label for half the samples, another
// class for the other half.
func writeExport(t testing.TB, dir string, classes []string, n int) {
	t.Helper()
	var lines []string
	for i := 0; i < n; i++ {
		at := time.Date(2026, 12, 1+i%2, 9, 0, i, 0, time.UTC)
		cam := fmt.Sprintf("c%d", 1+(i/2)%2)
		r := fieldset.Record{ID: fmt.Sprintf("%s-%03d", cam, i), Camera: cam, Time: at, Day: at.Format("2006-01-02"), FrameID: fmt.Sprintf("%s-f%03d", cam, i),
			Rules: []string{fieldset.RuleUncertain}}
		switch {
		case i%11 == 10:
			r.Label = fieldset.NotALeaf
		case i%13 == 12:
			r.Label = fieldset.Unsure
		case i%17 == 16:
		default:
			r.Label = classes[i%len(classes)]
		}
		pred := r.Label
		if (i/2)%2 == 1 || pred == "" || pred == fieldset.Unsure || pred == fieldset.NotALeaf {
			pred = classes[(i+1)%len(classes)]
		}
		r.Top = []fieldset.Scored{{Label: pred, Prob: 0.5}}
		if i%3 == 0 {
			r.Rules = append(r.Rules, fieldset.RuleBaseline)
		}
		if r.Label != "" && r.Label != fieldset.Unsure {
			r.Image = filepath.Join(r.Label, r.ID+".jpg")
			p := filepath.Join(dir, r.Image)
			os.MkdirAll(filepath.Dir(p), 0o755)
			f, _ := os.Create(p)
			label := r.Label
			if label == fieldset.NotALeaf {
				label = classes[0]
			}
			jpeg.Encode(f, SynthLeaf(label, rand.New(rand.NewPCG(uint64(i), 3))), &jpeg.Options{Quality: 85})
			f.Close()
		}
		b, _ := json.Marshal(r)
		lines = append(lines, string(b))
	}
	os.MkdirAll(dir, 0o755)
	if err := os.WriteFile(filepath.Join(dir, fieldset.RecordsFile), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestFieldSplitKeepsCameraDaysApart: no camera-day sits on both sides;
// the test set is the validation side's baseline samples; the data's
// classes stay; not_a_leaf is a class only when asked; unsure and
// unlabelled samples never train.
func TestFieldSplitKeepsCameraDaysApart(t *testing.T) {
	data := synthData(t, 4)
	exp := filepath.Join(t.TempDir(), "export")
	writeExport(t, exp, testClasses[:3], 80)
	for _, reject := range []bool{false, true} {
		ds, err := LoadFolder(data, 0.25, 3)
		if err != nil {
			t.Fatal(err)
		}
		info, err := AddField(ds, FieldOptions{Dirs: []string{exp}, ValFrac: 0.25, RejectClass: reject, Seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		if info.SplitBy != "camera-day" || info.Groups != 4 || len(info.ValGroups) == 0 {
			t.Fatalf("split %+v", info)
		}
		side := map[string]string{}
		for name, part := range map[string][]Sample{"train": ds.Train, "val": ds.Val, "test": ds.Test} {
			for _, s := range part {
				if s.Source != SourceField {
					continue
				}
				g := s.Camera + "/" + s.Day
				if name == "test" {
					name = "val"
				}
				if prev, ok := side[g]; ok && prev != name {
					t.Errorf("camera-day %s on both sides", g)
				}
				side[g] = name
				if strings.Contains(s.Path, fieldset.Unsure) {
					t.Errorf("an unsure sample is used: %s", s.Path)
				}
			}
		}
		for _, s := range ds.Test {
			if s.Source != SourceField || !s.Baseline {
				t.Errorf("test sample %+v is not a field baseline sample", s)
			}
		}
		if len(ds.Test) == 0 || info.Test != len(ds.Test) {
			t.Errorf("test set: %d (%+v)", len(ds.Test), info)
		}
		if !slices.Contains(ds.Classes, testClasses[3]) {
			t.Errorf("the data's class without field samples was dropped: %v", ds.Classes)
		}
		if slices.Contains(ds.Classes, fieldset.NotALeaf) != reject {
			t.Errorf("reject %v: classes %v", reject, ds.Classes)
		}
		if info.Unsure == 0 || info.Unlabelled == 0 || info.NotALeaf == 0 {
			t.Errorf("counts %+v", info)
		}
		// Labels still name the right classes after the class set grew.
		for _, s := range ds.Train {
			if s.Source == SourceData && !strings.Contains(s.Path, ds.Classes[s.Label]) {
				t.Fatalf("%s labelled %s", s.Path, ds.Classes[s.Label])
			}
		}
	}
	// One camera-day only: split by frame, said so.
	one := filepath.Join(t.TempDir(), "one")
	writeExport(t, one, testClasses[:2], 1) // a single record
	ds, _ := LoadFolder(data, 0.25, 3)
	if info, err := AddField(ds, FieldOptions{Dirs: []string{one}, ValFrac: 0.25, Seed: 1}); err != nil || info.SplitBy != "frame" {
		t.Errorf("one camera-day: %+v %v", info, err)
	}
}

// TestFieldShareInEveryBatch: with a share, every batch holds that many
// field samples and every data image comes once an epoch.
func TestFieldShareInEveryBatch(t *testing.T) {
	data := synthData(t, 6)
	exp := filepath.Join(t.TempDir(), "export")
	writeExport(t, exp, testClasses, 40)
	ds, _ := LoadFolder(data, 0.25, 3)
	if _, err := AddField(ds, FieldOptions{Dirs: []string{exp}, ValFrac: 0.25, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	cfg := cachedConfig(data, t.TempDir())
	cfg.BatchSize, cfg.FieldShare = 8, 0.25
	tr := &Trainer{cfg: cfg, data: ds, st: State{Seed: 4}}
	order := tr.epochOrder(0)
	seen := map[int]int{}
	for b := 0; b*8 < len(order); b++ {
		field := 0
		for _, i := range order[b*8 : min(b*8+8, len(order))] {
			if ds.Train[i].Source == SourceField {
				field++
			} else {
				seen[i]++
			}
		}
		if field != 2 {
			t.Fatalf("batch %d has %d field samples, want 2", b, field)
		}
	}
	for i, s := range ds.Train {
		if s.Source == SourceData && seen[i] != 1 {
			t.Fatalf("data image %d seen %d times", i, seen[i])
		}
	}
}

// TestMixedRunReportsAndResumes: a run with field samples reports per
// source (log.csv, report.csv side by side, the field test set), and one
// interrupted and resumed ends bit-identical to an uninterrupted one.
func TestMixedRunReportsAndResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("AlexNet convolutions in -short mode")
	}
	data := synthData(t, 4)
	exp := filepath.Join(t.TempDir(), "export")
	writeExport(t, exp, testClasses, 40)
	load := func() *Dataset {
		ds, _ := LoadFolder(data, 0.25, 3)
		if _, err := AddField(ds, FieldOptions{Dirs: []string{exp}, ValFrac: 0.25, Seed: 1}); err != nil {
			t.Fatal(err)
		}
		return ds
	}
	mixed := func(out string) Config {
		c := fullConfig(data, out)
		c.TrainFrom, c.CacheFeatures, c.FieldShare = "fc6", true, 0.25
		return c
	}
	outA := t.TempDir()
	a, err := runTo(t, context.Background(), mixed(outA), load(), false)
	if err != nil {
		t.Fatal(err)
	}
	cfg := mixed(t.TempDir())
	cfg.MaxSteps = 5
	if _, err := runTo(t, context.Background(), cfg, load(), false); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("interrupted run: %v", err)
	}
	cfg.MaxSteps = 0
	b, err := runTo(t, context.Background(), cfg, load(), true)
	if err != nil {
		t.Fatal(err)
	}
	sameState(t, a, b)
	head := func(name string) []string {
		f, err := os.Open(filepath.Join(outA, name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		rows, err := csv.NewReader(f).ReadAll()
		if err != nil || len(rows) < 2 {
			t.Fatalf("%s: %v", name, err)
		}
		return rows[0]
	}
	if h := head("log.csv"); !slices.Contains(h, "val_acc_field") || !slices.Contains(h, "val_acc_plantvillage") {
		t.Errorf("log.csv header %v", h)
	}
	if h := head("report.csv"); !slices.Contains(h, "field_recall") || !slices.Contains(h, "plantvillage_recall") {
		t.Errorf("report.csv header %v", h)
	}
	if _, err := os.Stat(filepath.Join(outA, "test.csv")); err != nil {
		t.Errorf("no test.csv for the field's baseline samples: %v", err)
	}
	ds := load()
	res, err := WriteReports(context.Background(), "", a.m, ds, 8, 2)
	if err != nil || res.BySource[SourceField].Total == 0 || res.Test.Total == 0 || res.TestKeptWith < 0 {
		t.Fatalf("reports: %+v %v", res, err)
	}
	// The kept-with answer was right for samples with (i/2) even.
	right := 0
	for _, s := range ds.Test {
		var cam, i int
		fmt.Sscanf(filepath.Base(s.Path), "c%d-%d.jpg", &cam, &i)
		if (i/2)%2 == 0 {
			right++
		}
	}
	if want := float64(right) / float64(len(ds.Test)); res.TestKeptWith != want {
		t.Errorf("kept-with accuracy %.3f, want %.3f", res.TestKeptWith, want)
	}
}
