package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"github.com/leafwatch/leafwatch/daemon/samples"
	"github.com/leafwatch/leafwatch/internal/fieldset"
)

// exportArchive makes a device's export archive from a real samples store:
// n labelled samples.
func exportArchive(t *testing.T, n int) ([]byte, string) {
	t.Helper()
	st, err := samples.Open(filepath.Join(t.TempDir(), "samples"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	var ids []string
	for i := 0; i < n; i++ {
		m := gocv.NewMatWithSize(64, 64, gocv.MatTypeCV8UC3)
		gocv.RandU(&m, gocv.NewScalar(0, 0, 0, 0), gocv.NewScalar(255, 255, 255, 0))
		buf, _ := gocv.IMEncode(gocv.JPEGFileExt, m)
		jpeg := bytes.Clone(buf.GetBytes())
		buf.Close()
		m.Close()
		at := time.Date(2026, 12, 1, 10, 0, i, 0, time.UTC)
		fid := fmt.Sprintf("cam-%02d", i)
		rec := fieldset.Record{ID: fid + "-0", Camera: "cam", Time: at, FrameID: fid, FrameSize: [2]int{64, 64}, Box: [4]int{0, 0, 64, 64},
			Region: "leaf", Top: []fieldset.Scored{{Label: "Tomato___healthy", Prob: 0.6}}, Rules: []string{fieldset.RuleBaseline}}
		if err := st.Add(ctx, samples.NewFrame{ID: fid, Camera: "cam", Time: at, Width: 64, Height: 64, JPEG: jpeg},
			[]samples.NewSample{{Record: rec, JPEG: jpeg}}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rec.ID)
	}
	if _, err := st.Label(ctx, ids, "Tomato___healthy", "ana", time.Now()); err != nil {
		t.Fatal(err)
	}
	plan, err := st.PlanTar(ctx, samples.ExportOptions{LabelledOnly: true, Labels: []string{"Tomato___healthy"}})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := st.WriteTar(&b, plan, 0); err != nil {
		t.Fatal(err)
	}
	return b.Bytes(), `"` + plan.Tag + `"`
}

// TestPullResumesAndChecks: an export cut off mid-download is resumed from
// where it stopped (Range, If-Range) and checked against SHA256SUMS; a
// changed export starts over; a damaged byte, a refusal and a bad address
// are errors that leave no export behind.
func TestPullResumesAndChecks(t *testing.T) {
	archive, etag := exportArchive(t, 6)
	var (
		cutAt    atomic.Int64 // cut the next response after this many bytes (0: none)
		requests atomic.Int32
		ranges   atomic.Int32
		serve    atomic.Value // []byte
		tag      atomic.Value // string
		refuse   atomic.Bool
	)
	serve.Store(archive)
	tag.Store(etag)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if r.URL.Path != "/samples/export" || r.URL.Query().Get("labelled_only") != "1" {
			http.NotFound(w, r)
			return
		}
		if refuse.Load() || r.Header.Get("Authorization") != "Bearer correct-horse-battery-staple" {
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		if r.Header.Get("Range") != "" {
			ranges.Add(1)
		}
		w.Header().Set("ETag", tag.Load().(string))
		data := serve.Load().([]byte)
		if n := cutAt.Swap(0); n > 0 {
			// Send the headers and n bytes, then drop the connection.
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
			w.WriteHeader(200)
			w.Write(data[:n])
			w.(http.Flusher).Flush()
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return
		}
		http.ServeContent(w, r, "export.tar", time.Time{}, bytes.NewReader(data))
	}))
	defer srv.Close()
	base := pullOptions{device: srv.URL, token: "correct-horse-battery-staple", maxBytes: 1 << 30, retries: 3,
		client: srv.Client(), log: slog.New(slog.NewTextHandler(io.Discard, nil)), retryWait: time.Millisecond}

	out := filepath.Join(t.TempDir(), "greenhouse1")
	o := base
	o.out = out
	cutAt.Store(int64(len(archive) / 2))
	rep, err := pull(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if ranges.Load() != 1 || rep.records != 6 || rep.images != 6 {
		t.Errorf("resumed %d times, %+v", ranges.Load(), rep)
	}
	if recs, err := fieldset.Load(out); err != nil || len(recs) != 6 {
		t.Errorf("the pulled export: %d records, %v", len(recs), err)
	}
	if _, err := os.Stat(out + ".tar.partial"); !os.IsNotExist(err) {
		t.Error("the partial download was left behind")
	}

	// The export changed between the interrupted pull and its resume: the
	// server answers the If-Range with the whole new archive.
	newer, newTag := exportArchive(t, 7)
	out2 := filepath.Join(t.TempDir(), "greenhouse2")
	o.out = out2
	cutAt.Store(int64(len(archive) / 3))
	o.retries = 0
	if _, err := pull(context.Background(), o); err == nil {
		t.Fatal("a cut download with no retries left succeeded")
	}
	serve.Store(newer)
	tag.Store(newTag)
	o.retries = 3
	if rep, err := pull(context.Background(), o); err != nil || rep.records != 7 {
		t.Fatalf("after the export changed: %+v %v", rep, err)
	}

	// A damaged byte in an image: refused, nothing left in place.
	bad := bytes.Clone(newer)
	i := bytes.Index(bad, []byte{0xff, 0xd8, 0xff})
	bad[i+200] ^= 0xff
	serve.Store(bad)
	o.out = filepath.Join(t.TempDir(), "damaged")
	if _, err := pull(context.Background(), o); err == nil || !strings.Contains(err.Error(), "does not match SHA256SUMS") {
		t.Errorf("a damaged archive: %v", err)
	}
	if _, err := os.Stat(o.out); !os.IsNotExist(err) {
		t.Error("a damaged pull left a folder")
	}

	// A refusal is not retried.
	refuse.Store(true)
	before := requests.Load()
	o.out = filepath.Join(t.TempDir(), "refused")
	if _, err := pull(context.Background(), o); err == nil || !strings.Contains(err.Error(), "--token-file") {
		t.Errorf("refused: %v", err)
	}
	if requests.Load()-before != 1 {
		t.Errorf("a refusal was retried (%d requests)", requests.Load()-before)
	}
	o.device = "greenhouse1:8080"
	if _, err := pull(context.Background(), o); err == nil || !strings.Contains(err.Error(), "not a device address") {
		t.Errorf("an address without a scheme: %v", err)
	}
}
