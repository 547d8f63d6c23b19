package samples

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leafwatch/leafwatch/internal/fieldset"
)

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

// TestLabelAndUndo: labels are per action; undo takes back the person's
// last action whole, and leaves what others relabelled since.
func TestLabelAndUndo(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	ids := addSamples(t, st, "bench1", 4, t0, "Tomato___Late_blight")
	if n, _ := st.Count(ctx, Filter{Unlabelled: true}); n != 4 {
		t.Fatalf("%d unlabelled, want 4", n)
	}
	res, err := st.Label(ctx, ids[:3], "Tomato___Late_blight", "ana", t0)
	if err != nil || res.Changed != 3 {
		t.Fatalf("label: %+v %v", res, err)
	}
	res2, _ := st.Label(ctx, ids[:1], "Tomato___Late_blight", "ana", t0)
	if res2.Same != 1 || res2.Changed != 0 {
		t.Errorf("labelling again with the same label: %+v", res2)
	}
	// Ben relabels one of Ana's.
	if _, err := st.Label(ctx, ids[2:3], fieldset.NotALeaf, "ben", t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	u, err := st.Undo(ctx, "ana")
	if err != nil || u.Restored != 2 || u.Skipped != 1 {
		t.Fatalf("undo: %+v %v", u, err)
	}
	for i, want := range []string{"", "", fieldset.NotALeaf, ""} {
		s, _ := st.Get(ctx, ids[i])
		if s.Label != want {
			t.Errorf("%s: label %q after undo, want %q", ids[i], s.Label, want)
		}
	}
	if _, err := st.Undo(ctx, "ana"); !errors.Is(err, ErrNothingToUndo) {
		t.Errorf("a second undo: %v", err)
	}
	if _, err := st.Label(ctx, ids[:1], "../etc", "ana", t0); err == nil {
		t.Error("a label that is a path was accepted")
	}
	res3, _ := st.Label(ctx, []string{"nope", ids[3]}, "Tomato___healthy", "ana", t0)
	if len(res3.Missing) != 1 || res3.Changed != 1 {
		t.Errorf("unknown id: %+v", res3)
	}
	sum, err := st.Summarise(ctx)
	if err != nil || sum.Total != 4 || sum.Unlabelled != 2 || sum.Labelled[fieldset.NotALeaf] != 1 || sum.Labelled["Tomato___healthy"] != 1 {
		t.Errorf("summary %+v %v", sum, err)
	}
}

// TestBudgetNeverEvictsLabelled: beyond the cap the oldest unlabelled go
// first; labelled samples stay even when they alone fill it (Full).
func TestBudgetNeverEvictsLabelled(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	ids := addSamples(t, st, "bench1", 20, t0, "Tomato___Late_blight")
	used, _ := st.bytesUsed(ctx, st.db)
	per := used / 20
	// Label the three oldest and the newest.
	if _, err := st.Label(ctx, []string{ids[0], ids[1], ids[2], ids[19]}, "Tomato___Late_blight", "ana", t0); err != nil {
		t.Fatal(err)
	}
	b, err := st.Enforce(ctx, per*10)
	if err != nil {
		t.Fatal(err)
	}
	if b.Evicted == 0 || b.Full || b.Used > per*10 {
		t.Fatalf("enforce: %+v (per sample %d)", b, per)
	}
	left, _ := st.List(ctx, Filter{})
	got := map[string]bool{}
	for _, s := range left {
		got[s.ID] = true
	}
	for _, id := range []string{ids[0], ids[1], ids[2], ids[19]} {
		if !got[id] {
			t.Errorf("labelled %s was evicted", id)
		}
	}
	if got[ids[3]] && !got[ids[18]] {
		t.Error("a newer unlabelled sample went before an older one")
	}
	// Every file left belongs to a record and vice versa.
	fs := files(t, st)
	if len(fs) != 2*len(left) {
		t.Errorf("%d files for %d samples (one region and one frame each)", len(fs), len(left))
	}
	// A cap below what the labelled ones take: full, nothing labelled goes.
	b, err = st.Enforce(ctx, per*2)
	if err != nil || !b.Full {
		t.Fatalf("a cap below the labelled samples: %+v %v", b, err)
	}
	if n, _ := st.Count(ctx, Filter{Labelled: true}); n != 4 {
		t.Errorf("%d labelled left, want 4", n)
	}
	if n, _ := st.Count(ctx, Filter{Unlabelled: true}); n != 0 {
		t.Errorf("%d unlabelled left beyond the cap", n)
	}
}

// TestRecoverAfterCrash: files without records (a crash between the files
// and the commit), half-written files and records whose files are gone are
// cleaned up; a labelled one lost that way is named.
func TestRecoverAfterCrash(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	ids := addSamples(t, st, "bench1", 3, t0, "Tomato___Late_blight")
	st.Label(ctx, ids[:1], "Tomato___Late_blight", "ana", t0)
	orphan := filepath.Join(st.dir, "images", "bench1", "20261201", "bench1-x-0.jpg")
	os.WriteFile(orphan, []byte("jpeg"), 0o640)
	tmp := filepath.Join(st.dir, "frames", "bench1", "20261201", ".bench1-y.jpg.tmp-123")
	os.WriteFile(tmp, []byte("half"), 0o640)
	s0, _ := st.Get(ctx, ids[0])
	os.Remove(filepath.Join(st.dir, s0.File)) // a labelled sample's image vanished
	rep, err := st.Recover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// (The lost sample's frame goes with its record: no sample uses it.)
	if rep.OrphanFiles != 1 || rep.TempFiles != 1 || rep.RecordsWithoutFiles != 1 || len(rep.LabelledLost) != 1 || rep.LabelledLost[0] != ids[0] {
		t.Errorf("recover: %+v", rep)
	}
	left, _ := st.List(ctx, Filter{})
	if len(left) != 2 || len(files(t, st)) != 4 {
		t.Errorf("%d samples and %d files after recovery, want 2 and 4", len(left), len(files(t, st)))
	}
}

// TestExportAndLabelStudioRoundTrip: the export is the image folder
// finetune reads, samples.jsonl with every record, Label Studio tasks with
// the model's scores, and SHA256SUMS that check; importing Label Studio's
// annotations labels the samples, conflicts are reported, one undo takes
// the import back.
func TestExportAndLabelStudioRoundTrip(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	ids := addSamples(t, st, "bench1", 5, t0, "Tomato___Late_blight")
	st.Label(ctx, ids[:1], "Tomato___Late_blight", "ana", t0)
	st.Label(ctx, ids[1:2], fieldset.NotALeaf, "ana", t0)
	st.Label(ctx, ids[2:3], fieldset.Unsure, "ana", t0)
	labels := []string{"Tomato___Late_blight", "Tomato___healthy", fieldset.NotALeaf, fieldset.Unsure}
	dir := filepath.Join(t.TempDir(), "export")
	rep, err := st.Export(ctx, dir, ExportOptions{Labels: labels})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Labelled != 2 || rep.Unlabelled != 3 || rep.Records != 5 {
		t.Errorf("export report %+v", rep)
	}
	for _, p := range []string{"Tomato___Late_blight/" + ids[0] + ".jpg", "not_a_leaf/" + ids[1] + ".jpg", "_unlabelled/" + ids[2] + ".jpg", "_unlabelled/" + ids[4] + ".jpg"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Errorf("export lacks %s", p)
		}
	}
	recs, err := fieldset.Load(dir)
	if err != nil || len(recs) != 5 {
		t.Fatalf("fieldset.Load: %d records, %v", len(recs), err)
	}
	if recs[0].Label != "Tomato___Late_blight" || recs[0].LabelledBy != "ana" || recs[0].Day != "" && recs[0].Day != "2026-12-01" {
		t.Errorf("record %+v", recs[0])
	}
	// SHA256SUMS names every file with its hash.
	sums, _ := os.ReadFile(filepath.Join(dir, "SHA256SUMS"))
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
		want, name, _ := strings.Cut(line, "  ")
		b, err := os.ReadFile(filepath.Join(dir, name))
		h := sha256.Sum256(b)
		if err != nil || hex.EncodeToString(h[:]) != want {
			t.Errorf("SHA256SUMS: %s does not match (%v)", name, err)
		}
		n++
	}
	if n != 5+3 {
		t.Errorf("SHA256SUMS lists %d files, want 8", n)
	}
	// Label Studio: tasks carry predictions with scores; annotate two there.
	var tasks []map[string]any
	tb, _ := os.ReadFile(filepath.Join(dir, "label-studio", "tasks.json"))
	if err := json.Unmarshal(tb, &tasks); err != nil || len(tasks) != 5 {
		t.Fatalf("tasks.json: %d tasks, %v", len(tasks), err)
	}
	pred := tasks[3]["predictions"].([]any)[0].(map[string]any)
	if pred["score"].(float64) != 0.5 || pred["model_version"] != "abc" {
		t.Errorf("prediction %v", pred)
	}
	ann := func(label string) []any {
		return []any{map[string]any{"result": []any{map[string]any{"from_name": "label", "to_name": "image", "type": "choices",
			"value": map[string]any{"choices": []any{label}}}}, "completed_by": 7, "updated_at": "2026-12-02T10:00:00Z"}}
	}
	tasks[3]["annotations"] = ann("Tomato___healthy")
	tasks[4]["annotations"] = ann("Pepper___bogus")
	tasks[0]["annotations"] = ann("Tomato___healthy") // conflicts with ana's label
	tasks = append(tasks, map[string]any{"data": map[string]any{"sample_id": "gone-0"}, "annotations": ann("Tomato___healthy")})
	out, _ := json.Marshal(tasks)
	irep, err := st.ImportLabelStudio(ctx, bytes.NewReader(out), labels, "ls", false)
	if err != nil {
		t.Fatal(err)
	}
	if irep.Applied != 1 || len(irep.Conflicts) != 1 || len(irep.BadLabels) != 1 || len(irep.Unknown) != 1 {
		t.Errorf("import %+v", irep)
	}
	s3, _ := st.Get(ctx, ids[3])
	if s3.Label != "Tomato___healthy" || s3.LabelledBy != "ls" {
		t.Errorf("imported label: %+v", s3.Record)
	}
	if u, err := st.Undo(ctx, "ls"); err != nil || u.Restored != 1 {
		t.Errorf("undo the import: %+v %v", u, err)
	}
	if _, err := st.Export(ctx, t.TempDir(), ExportOptions{}); err == nil {
		// t.TempDir() is empty: allowed. A folder with other files is not.
	}
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, "keep.txt"), []byte("mine"), 0o644)
	if _, err := st.Export(ctx, other, ExportOptions{}); err == nil {
		t.Error("export replaced a folder that was not an export")
	}
}

// TestTarIsDeterministicAndResumable: the same content gives the same
// bytes and tag; a stream from an offset is the tail of the whole; the
// archive holds the export; the planned size is exact.
func TestTarIsDeterministicAndResumable(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	ids := addSamples(t, st, "bench1", 4, t0, "Tomato___Late_blight")
	st.Label(ctx, ids[:2], "Tomato___Late_blight", "ana", t0)
	opt := ExportOptions{LabelledOnly: true, Labels: []string{"Tomato___Late_blight"}}
	whole := func() ([]byte, *TarInfo) {
		p, err := st.PlanTar(ctx, opt)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := st.WriteTar(&b, p, 0); err != nil {
			t.Fatal(err)
		}
		return b.Bytes(), p
	}
	a, pa := whole()
	b, pb := whole()
	if !bytes.Equal(a, b) || pa.Tag != pb.Tag || int64(len(a)) != pa.Size {
		t.Fatalf("two streams differ (%d/%d bytes, tags %s %s, planned %d)", len(a), len(b), pa.Tag, pb.Tag, pa.Size)
	}
	var tail bytes.Buffer
	st.WriteTar(&tail, pa, 1000)
	if !bytes.Equal(tail.Bytes(), a[1000:]) {
		t.Error("the stream from byte 1000 is not the tail of the whole")
	}
	tr := tar.NewReader(bytes.NewReader(a))
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
	if len(names) != 2+4 || names[len(names)-1] != "SHA256SUMS" {
		t.Errorf("archive holds %v", names)
	}
	// An unlabelled sample added does not change a labelled-only export;
	// a label does.
	addSamples(t, st, "bench2", 1, t0, "Tomato___Late_blight")
	if _, p := whole(); p.Tag != pa.Tag {
		t.Error("an unlabelled sample changed the labelled-only export's tag")
	}
	st.Label(ctx, ids[2:3], "Tomato___Late_blight", "ana", t0)
	if _, p := whole(); p.Tag == pa.Tag {
		t.Error("a new label did not change the tag")
	}
}
