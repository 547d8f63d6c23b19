package daemon

import (
	"context"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/leafwatch/leafwatch/daemon/samples"
	"github.com/leafwatch/leafwatch/internal/fieldset"
	"github.com/leafwatch/leafwatch/internal/mqtttest"
)

// browser starts headless Chromium (Debian's) driven by chromedp, or skips.
func browser(t *testing.T) context.Context {
	t.Helper()
	path := os.Getenv("LEAFWATCH_CHROMIUM")
	if path == "" {
		for _, p := range []string{"chromium", "chromium-browser", "google-chrome"} {
			if full, err := exec.LookPath(p); err == nil {
				path = full
				break
			}
		}
	}
	if path == "" {
		t.Skip("no Chromium here (make deps installs Debian's chromium)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()), chromedp.Flag("disable-quic", true), chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true), chromedp.WindowSize(1280, 1000))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelT(); cancelC(); cancelA() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v", path, err)
	}
	return ctx
}

// TestLabelPageInABrowser: a grower labels in Chromium — one click accepts
// the model's answer, keys label (n: not a leaf, a: accept), two samples
// selected and labelled by typing a label's name, undo takes that back —
// and the database says exactly that afterwards. Basic auth, as on a
// device reached over the network: the labels are recorded under the
// user's name.
func TestLabelPageInABrowser(t *testing.T) {
	if os.Getenv("LEAFWATCH_EMULATED") != "" {
		t.Skip("under emulation an AlexNet pass takes seconds and the page is the host's (its browser too)")
	}
	users := filepath.Join(t.TempDir(), "users")
	os.WriteFile(users, []byte("grower:tomato-tomato\n"), 0o600)
	r := keepRig(t, "http_auth: {basic_auth_file: "+users+"}\n")
	mqtttest.WaitFor(t, keepWait, "kept samples", func() bool { n, _ := r.d.store.Count(t.Context(), samples.Filter{}); return n >= 8 })
	ctx := browser(t)
	base := "http://" + r.http
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("grower:tomato-tomato"))
	label := func(id string) samples.Sample {
		s, err := r.d.store.Get(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	card := func(id, part string) chromedp.CSS { return chromedp.CSS(`#queue .card[data-id="` + id + `"]` + part) }
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": auth}}); err != nil {
		t.Fatal(err)
	}
	do("open the page", chromedp.Navigate(base+"/label"), chromedp.WaitVisible(chromedp.CSS(`body[data-ready="1"]`)), chromedp.WaitVisible(chromedp.CSS(`#queue .card`)))
	ids, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('#queue .card')).map(c => c.dataset.id)`))
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) < 6 {
		t.Fatalf("the page shows %d cards", len(ids))
	}
	first := label(ids[0])
	// 1. One click on the first card's accept button.
	do("click accept", chromedp.Click(card(ids[0], " .accept")), chromedp.WaitNotPresent(card(ids[0], "")))
	if s := label(ids[0]); s.Label != first.Predicted() || s.LabelledBy != "grower" {
		t.Errorf("after the click: label %q by %q, want %q by grower", s.Label, s.LabelledBy, first.Predicted())
	}
	// 2. Keys on the focused card: n = not a leaf, then a = accept.
	do("key n", chromedp.Focus(card(ids[1], "")), chromedp.KeyEvent("n"), chromedp.WaitNotPresent(card(ids[1], "")))
	if s := label(ids[1]); s.Label != fieldset.NotALeaf {
		t.Errorf("after n: %q", s.Label)
	}
	do("key a", chromedp.Focus(card(ids[2], "")), chromedp.KeyEvent("a"), chromedp.WaitNotPresent(card(ids[2], "")))
	third := label(ids[2])
	if third.Label == "" || third.Label != third.Predicted() {
		t.Errorf("after a: %q (predicted %q)", third.Label, third.Predicted())
	}
	// 3. Select two, type a label's display name, apply.
	do("bulk label", chromedp.Click(card(ids[3], " .select")), chromedp.Click(card(ids[4], " .select")),
		chromedp.SendKeys(chromedp.CSS(`#bulk-label`), "Tomato: Leaf Mold"), chromedp.Click(chromedp.CSS(`#bulk-apply`)),
		chromedp.WaitNotPresent(card(ids[4], "")))
	for _, id := range ids[3:5] {
		if s := label(id); s.Label != "Tomato___Leaf_Mold" {
			t.Errorf("%s after the bulk label: %q", id, s.Label)
		}
	}
	// 4. Undo takes the bulk action back (both), nothing else.
	do("undo", chromedp.Click(chromedp.CSS(`#undo`)), chromedp.WaitVisible(card(ids[4], "")))
	for i, want := range []string{first.Predicted(), fieldset.NotALeaf, third.Label, "", ""} {
		if s := label(ids[i]); s.Label != want {
			t.Errorf("%s after undo: %q, want %q", ids[i], s.Label, want)
		}
	}
	// The summary on the page counts what the database holds.
	do("summary", chromedp.WaitVisible(chromedp.CSS(`.cls[data-label="not_a_leaf"]`)))
	summary, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`.cls[data-label="not_a_leaf"] .count`)))
	if err != nil || !strings.HasPrefix(summary, "1/") {
		t.Errorf("not a leaf counted %q on the page (%v)", summary, err)
	}
	// LEAFWATCH_LABEL_SCREENSHOT=FILE keeps a picture of the page.
	if out := os.Getenv("LEAFWATCH_LABEL_SCREENSHOT"); out != "" {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
		if err != nil || os.WriteFile(out, png, 0o644) != nil {
			t.Errorf("screenshot: %v", err)
		}
	}
}
