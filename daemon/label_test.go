package daemon

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leafwatch/leafwatch/daemon/samples"
	"github.com/leafwatch/leafwatch/internal/fieldset"
	"github.com/leafwatch/leafwatch/internal/mqtttest"
)

// keepWait bounds the wait for a keep rig's first samples: ~8 s alone
// under -race, over 30 s once in make test's race run beside the other
// race process on two cores. Waiting returns as soon as they are there.
const keepWait = 2 * time.Minute

// keepRig runs the daemon on noisy images with a threshold no answer
// reaches: every region is "uncertain" and kept. The near-duplicate filter
// is off (dedup_window: 0s): pixel noise shrinks to nearly the same grey
// in the 9×8 dHash, so with it on, which regions were kept depended on the
// order of the model's answers, and a run could stall below the count a
// test waits for.
func keepRig(t *testing.T, yaml string) *testRig {
	t.Helper()
	if os.Getenv("LEAFWATCH_EMULATED") != "" {
		// Keeping and labelling are the host's logic; under emulation every
		// AlexNet pass takes seconds and the samples come too slowly.
		t.Skip("the samples and labelling tests run on the host, not under emulation")
	}
	imgs := filepath.Join(t.TempDir(), "imgs")
	os.MkdirAll(imgs, 0o755)
	writeTestImages(t, imgs, 6, 320, 240)
	return newRig(t, rigOptions{class: 3, source: "folder://" + imgs + "?fps=5&loop=true", yaml: yaml,
		camera: "    interval: 200ms\n    tiling: {rows: 1, cols: 2, overlap: 0.1}\n    decision: {threshold: 0.9999, k: 2, n: 3, cooldown: 1ms}\n" +
			"    keep: {baseline_every: 0s, max_per_frame: 2, dedup_window: 0s}\n"})
}

// do sends a request to the rig with optional headers and body.
func (r *testRig) do(t *testing.T, method, path, body string, header ...string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+r.http+path, strings.NewReader(body))
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// TestKeepAndLabelOverHTTP: the daemon keeps uncertain regions; the
// labelling API lists them lowest margin first, labels with the page's
// token only (cross-site and token-less requests refused), undoes, and
// the export streams the labelled ones; metrics and the retained MQTT
// sensor count what waits.
func TestKeepAndLabelOverHTTP(t *testing.T) {
	r := keepRig(t, "")
	sub := mqtttest.NewSubscriber(t, r.broker, "samples-sub", true, "leafwatch/rig/samples", "homeassistant/sensor/rig/samples_waiting/config")
	mqtttest.WaitFor(t, keepWait, "kept samples", func() bool {
		n, _ := r.d.store.Count(t.Context(), samples.Filter{})
		return n >= 6
	})
	code, body, _ := r.do(t, "GET", "/label/api/queue?limit=100", "")
	var q struct {
		Samples []queueItem `json:"samples"`
		Total   int         `json:"total"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &q) != nil || len(q.Samples) < 6 {
		t.Fatalf("queue: %d %s", code, body)
	}
	for i := 1; i < len(q.Samples); i++ {
		if q.Samples[i].Margin < q.Samples[i-1].Margin {
			t.Fatal("the queue is not lowest margin first")
		}
	}
	s0 := q.Samples[0]
	if !strings.Contains(strings.Join(s0.Rules, ","), "uncertain") || s0.Region != "tile" || len(s0.Top) != 4 {
		t.Errorf("queue item %+v", s0)
	}
	if code, b, h := r.do(t, "GET", "/label/img/"+s0.ID+"/region", ""); code != 200 || h.Get("Content-Type") != "image/jpeg" || !bytes.HasPrefix([]byte(b), []byte{0xff, 0xd8}) {
		t.Errorf("region image: %d %s", code, h.Get("Content-Type"))
	}
	if code, _, _ := r.do(t, "GET", "/label/img/"+s0.ID+"/frame", ""); code != 200 {
		t.Errorf("frame image: %d", code)
	}
	// The page: every asset local, the token in it, a strict CSP.
	code, page, h := r.do(t, "GET", "/label", "")
	if code != 200 || !strings.Contains(page, `content="`+r.d.csrf+`"`) || !strings.Contains(h.Get("Content-Security-Policy"), "default-src 'self'") || strings.Contains(page, "https://") {
		t.Errorf("label page: %d, CSP %q", code, h.Get("Content-Security-Policy"))
	}
	body = `{"ids":["` + s0.ID + `","` + q.Samples[1].ID + `"],"label":"Tomato___Late_blight"}`
	tok := "X-Leafwatch-Token"
	for _, c := range []struct {
		name   string
		header []string
	}{
		{"no token", nil},
		{"wrong token", []string{tok, "0123"}},
		{"cross-site", []string{tok, r.d.csrf, "Sec-Fetch-Site", "cross-site"}},
		{"other origin", []string{tok, r.d.csrf, "Origin", "http://evil.example"}},
	} {
		if code, b, _ := r.do(t, "POST", "/label/api/label", body, c.header...); code != 403 {
			t.Errorf("%s: %d %s, want 403", c.name, code, b)
		}
	}
	if code, _, _ := r.do(t, "POST", "/label/api/label", `{"ids":["`+s0.ID+`"],"label":"Banana___healthy"}`, tok, r.d.csrf); code != 400 {
		t.Errorf("a label the model does not have: %d", code)
	}
	code, b, _ := r.do(t, "POST", "/label/api/label", body, tok, r.d.csrf, "Origin", "http://"+r.http, "Sec-Fetch-Site", "same-origin")
	if code != 200 || !strings.Contains(b, `"changed":2`) {
		t.Fatalf("label: %d %s", code, b)
	}
	got, _ := r.d.store.Get(t.Context(), s0.ID)
	if got.Label != "Tomato___Late_blight" || got.LabelledBy != "local" {
		t.Errorf("stored: %+v", got.Record)
	}
	// The export holds the labelled ones (from loopback without auth).
	code, tarb, hdr := r.do(t, "GET", "/samples/export?labelled_only=1", "")
	if code != 200 || hdr.Get("ETag") == "" {
		t.Fatalf("export: %d", code)
	}
	names := tarNames(t, []byte(tarb))
	if !names["Tomato___Late_blight/"+s0.ID+".jpg"] || !names[fieldset.RecordsFile] || !names["SHA256SUMS"] {
		t.Errorf("export holds %v", names)
	}
	// Resumed: the tail from a byte, only while the content is the same.
	code, tail, _ := r.do(t, "GET", "/samples/export?labelled_only=1", "", "Range", "bytes=700-", "If-Range", hdr.Get("ETag"))
	if code != 206 || tail != tarb[700:] {
		t.Errorf("resumed export: %d, %d bytes (want %d)", code, len(tail), len(tarb)-700)
	}
	if code, _, _ := r.do(t, "GET", "/samples/export?labelled_only=1", "", "Range", "bytes=700-", "If-Range", `"stale"`); code != 200 {
		t.Errorf("a resume of changed content: %d, want the whole archive (200)", code)
	}
	if code, b, _ := r.do(t, "POST", "/label/api/undo", "{}", tok, r.d.csrf); code != 200 || !strings.Contains(b, `"restored":2`) {
		t.Errorf("undo: %d %s", code, b)
	}
	if code, _, _ := r.do(t, "POST", "/label/api/undo", "{}", tok, r.d.csrf); code != 409 {
		t.Errorf("undo with nothing left: %d", code)
	}
	// Metrics and the MQTT sensor.
	_, met := r.get(t, "/metrics")
	for _, m := range []string{`leafwatch_samples_kept_total{camera="bench1",rule="uncertain"}`, "leafwatch_samples_unlabelled", "leafwatch_samples_bytes"} {
		if !strings.Contains(met, m) {
			t.Errorf("metrics lack %s", m)
		}
	}
	mqtttest.WaitFor(t, 30*time.Second, "the samples sensor", func() bool {
		for _, s := range sub.On("leafwatch/rig/samples") {
			if strings.Contains(s, `"waiting":`) && strings.Contains(s, `/label"`) {
				return true
			}
		}
		return false
	})
	if len(sub.On("homeassistant/sensor/rig/samples_waiting/config")) == 0 {
		t.Error("no Home Assistant discovery for the samples sensor")
	}
}

func tarNames(t *testing.T, b []byte) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("tar: %v", err)
		}
		out[h.Name] = true
	}
}

// TestExportNeedsAuthBeyondLoopback: from another machine the export needs
// http_auth; with a token it streams.
func TestExportNeedsAuthBeyondLoopback(t *testing.T) {
	req, _ := http.NewRequest("GET", "/samples/export", nil)
	req.RemoteAddr = "192.0.2.7:5555"
	if fromLoopback(req) {
		t.Fatal("192.0.2.7 taken for loopback")
	}
	req.RemoteAddr = "[::1]:5555"
	if !fromLoopback(req) {
		t.Fatal("::1 not taken for loopback")
	}
	tokFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokFile, []byte("correct-horse-battery-staple\n"), 0o600)
	r := keepRig(t, "http_auth: {token_file: "+tokFile+"}\n")
	if code, _, _ := r.do(t, "GET", "/samples/export", ""); code != 401 {
		t.Errorf("without the token: %d", code)
	}
	if code, _, _ := r.do(t, "GET", "/samples/export", "", "Authorization", "Bearer correct-horse-battery-staple"); code != 200 {
		t.Errorf("with the token: %d", code)
	}
	// With a token, labelling is recorded as "token".
	mqtttest.WaitFor(t, 30*time.Second, "a kept sample", func() bool { n, _ := r.d.store.Count(t.Context(), samples.Filter{}); return n > 0 })
	list, _ := r.d.store.List(t.Context(), samples.Filter{Limit: 1})
	code, b, _ := r.do(t, "POST", "/label/api/label", `{"ids":["`+list[0].ID+`"],"label":"unsure"}`, "X-Leafwatch-Token", r.d.csrf, "Authorization", "Bearer correct-horse-battery-staple")
	if s, _ := r.d.store.Get(t.Context(), list[0].ID); code != 200 || s.LabelledBy != "token" {
		t.Errorf("label with a token: %d %s, labelled by %q", code, b, s.LabelledBy)
	}
}

// TestNoStoreStillServes: with a samples store that cannot be opened (a
// file where its folder should be), the daemon classifies and publishes;
// the labelling page says why it is empty.
func TestNoStoreStillServes(t *testing.T) {
	r := newRig(t, rigOptions{class: 0, before: func(stateDir string) {
		os.MkdirAll(stateDir, 0o750)
		os.WriteFile(filepath.Join(stateDir, "samples"), []byte("not a folder"), 0o600)
	}})
	mqtttest.WaitFor(t, 20*time.Second, "a classified frame", func() bool {
		_, m := r.get(t, "/metrics")
		return strings.Contains(m, `leafwatch_frames_classified_total{camera="bench1"} `)
	})
	if code, b, _ := r.do(t, "GET", "/label", ""); code != 200 || !strings.Contains(b, "samples store is not available") {
		t.Errorf("label page: %d", code)
	}
	if code, _, _ := r.do(t, "GET", "/label/api/queue", ""); code != 503 {
		t.Errorf("queue without a store: %d", code)
	}
	if !strings.Contains(r.logs.String(), "keeping and labelling are off") {
		t.Error("the log does not say why keeping is off")
	}
}
