package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"github.com/leafwatch/leafwatch/daemon"
	"github.com/leafwatch/leafwatch/internal/fieldset"
	"github.com/leafwatch/leafwatch/internal/selfexec"
	"github.com/leafwatch/leafwatch/internal/testlog"
	"github.com/leafwatch/leafwatch/model"
)

// TestMain lets the test binary run as leafwatchd (the command line under
// test, in a process of its own).
func TestMain(m *testing.M) {
	if os.Getenv("LEAFWATCHD_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// cli runs `leafwatchd args…` as another process.
func cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := selfexec.Command(args...)
	cmd.Env = append(os.Environ(), "LEAFWATCHD_RUN_MAIN=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

var labels = []string{"Tomato___Late_blight", "Tomato___Leaf_Mold", "Tomato___Target_Spot", "Tomato___healthy"}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestSamplesCommandsWhileTheDaemonRuns: every `leafwatchd samples`
// command works in its own process on the state directory of a daemon
// that keeps samples meanwhile.
func TestSamplesCommandsWhileTheDaemonRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a daemon with AlexNet")
	}
	dir := t.TempDir()
	m, err := model.NewRandom(model.TorchVision, len(labels), 1)
	if err != nil {
		t.Fatal(err)
	}
	m.Meta.Labels = labels
	ckpt := filepath.Join(dir, "model.safetensors")
	if err := m.Save(ckpt); err != nil {
		t.Fatal(err)
	}
	imgs := filepath.Join(dir, "imgs")
	os.MkdirAll(imgs, 0o755)
	// Coarse random blocks, not pixel noise: noise shrinks to nearly the
	// same grey where the keeper's perceptual hash looks, so its images
	// may count as near-duplicates of one another (the likeliest reason
	// one CI run kept only 4 of 8 in 3 minutes, the daemon healthy
	// throughout); blocks give each image its own hash.
	for i := 0; i < 12; i++ {
		small := gocv.NewMatWithSize(6, 8, gocv.MatTypeCV8UC3)
		gocv.RandU(&small, gocv.NewScalar(0, 0, 0, 0), gocv.NewScalar(255, 255, 255, 0))
		f := gocv.NewMat()
		gocv.Resize(small, &f, image.Pt(320, 240), 0, 0, gocv.InterpolationNearestNeighbor)
		gocv.IMWrite(filepath.Join(imgs, fmt.Sprintf("%02d.png", i)), f)
		small.Close()
		f.Close()
	}
	cfgFile := filepath.Join(dir, "leafwatchd.yaml")
	var logBuf testlog.Buffer
	httpAddr, done, cancel := startDaemonOnFreePorts(t, &logBuf, func(httpAddr, brokerAddr string) string {
		os.WriteFile(cfgFile, []byte(fmt.Sprintf(`device: cli
model: %s
state_dir: %s
listen: %s
broker: embedded
embedded_broker: {address: %s}
cameras:
  - name: bench1
    source: folder://%s?fps=10&loop=true
    interval: 100ms
    decision: {threshold: 0.9999}
    keep: {baseline_every: 0s, max_per_hour: 3600}
`, ckpt, filepath.Join(dir, "state"), httpAddr, brokerAddr, imgs)), 0o644)
		return cfgFile
	})
	defer func() { cancel(); <-done }()
	defer func() {
		if t.Failed() {
			t.Logf("the daemon's log:\n%s", logBuf.String())
		}
	}()

	sum := func() map[string]any {
		resp, err := http.Get("http://" + httpAddr + "/label/api/summary")
		if err != nil {
			return nil
		}
		defer resp.Body.Close()
		var v map[string]any
		json.NewDecoder(resp.Body).Decode(&v)
		return v
	}
	deadline := time.Now().Add(3 * time.Minute) // generous: other packages' AlexNets share the cores under make test
	for {
		s := sum()
		if s != nil && s["summary"].(map[string]any)["total"].(float64) >= 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon kept fewer than 5 samples in 3 minutes: %v", s)
		}
		select {
		case err := <-done:
			done <- err // for the deferred stop
			t.Fatalf("the daemon stopped: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	run := func(args ...string) string {
		t.Helper()
		out, err := cli(t, append([]string{"samples", "--config", cfgFile}, args...)...)
		if err != nil {
			t.Fatalf("leafwatchd samples %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	out := run("list", "--unlabelled", "--json")
	var ids []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var rec fieldset.Record
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("list --json line %q: %v", line, err)
		}
		ids = append(ids, rec.ID)
	}
	if len(ids) < 5 {
		t.Fatalf("%d unlabelled listed", len(ids))
	}
	if out := run("label", "--as", "Tomato___healthy", "--by", "ana", ids[0], ids[1]); !strings.Contains(out, "2 labelled") {
		t.Errorf("label: %s", out)
	}
	if out := run("label", "--accept", "--by", "ben", ids[2]); !strings.Contains(out, "1 labelled") {
		t.Errorf("label --accept: %s", out)
	}
	if out, err := cli(t, "samples", "--config", cfgFile, "label", "--as", "Banana___healthy", ids[3]); err == nil || !strings.Contains(out, "not one of the model's labels") {
		t.Errorf("an unknown label: %v %s", err, out)
	}
	if out := run("undo", "--by", "ben"); !strings.Contains(out, "undone: 1") {
		t.Errorf("undo: %s", out)
	}
	if out := run("summary"); !strings.Contains(out, "Tomato___healthy  2") {
		t.Errorf("summary: %s", out)
	}
	exp := filepath.Join(dir, "export")
	if out := run("export", "--out", exp); !strings.Contains(out, "2 labelled images") {
		t.Errorf("export: %s", out)
	}
	recs, err := fieldset.Load(exp)
	if err != nil || len(recs) < 5 {
		t.Fatalf("the export: %d records, %v", len(recs), err)
	}
	// Label Studio: annotate one of the exported tasks, import it back.
	tb, _ := os.ReadFile(filepath.Join(exp, "label-studio", "tasks.json"))
	var tasks []map[string]any
	json.Unmarshal(tb, &tasks)
	for _, task := range tasks {
		if task["data"].(map[string]any)["sample_id"] == ids[3] {
			task["annotations"] = []any{map[string]any{"result": []any{map[string]any{"type": "choices", "from_name": "label", "to_name": "image",
				"value": map[string]any{"choices": []any{"Tomato___Leaf_Mold"}}}}, "completed_by": 3}}
		}
	}
	lsFile := filepath.Join(dir, "ls-export.json")
	b, _ := json.Marshal(tasks)
	os.WriteFile(lsFile, b, 0o644)
	if out := run("import", lsFile); !strings.Contains(out, "1 labels applied") {
		t.Errorf("import: %s", out)
	}
	if out := run("list", "--label", "Tomato___Leaf_Mold"); !strings.Contains(out, ids[3]) {
		t.Errorf("the imported label is not listed: %s", out)
	}
	if out := run("delete", ids[4]); !strings.Contains(out, "deleted 1") {
		t.Errorf("delete: %s", out)
	}
	if out, err := cli(t, "samples", "--state-dir", filepath.Join(dir, "nope"), "summary"); err == nil || !strings.Contains(out, "no samples kept here yet") {
		t.Errorf("a state directory without samples: %v %s", err, out)
	}
	// The daemon kept on keeping meanwhile, and sees the labels (its
	// counts are at most a few seconds old).
	deadline = time.Now().Add(15 * time.Second)
	for {
		lab, _ := sum()["summary"].(map[string]any)["labelled"].(map[string]any)
		if lab["Tomato___healthy"] == 2.0 && lab["Tomato___Leaf_Mold"] == 1.0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon's summary: %v", lab)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// startDaemonOnFreePorts starts a daemon on ports that were free a moment
// ago; when another process took one of them meanwhile (an outgoing
// connection of a test running beside this one may get it), it tries again
// on new ports instead of failing on a port it never chose.
func startDaemonOnFreePorts(t *testing.T, log *testlog.Buffer, writeConfig func(httpAddr, brokerAddr string) string) (httpAddr string, done chan error, cancel context.CancelFunc) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		httpAddr = freePort(t)
		cfg, err := daemon.LoadConfig(writeConfig(httpAddr, freePort(t)))
		if err != nil {
			t.Fatal(err)
		}
		d, err := daemon.New(cfg, slog.New(slog.NewTextHandler(log, nil)))
		if err != nil {
			t.Fatal(err)
		}
		ctx, stop := context.WithCancel(context.Background())
		done = make(chan error, 1)
		go func() { done <- d.Run(ctx) }()
		// The listeners are open once /healthz answers.
		for {
			select {
			case err := <-done:
				stop()
				if attempt < 3 && errors.Is(err, syscall.EADDRINUSE) {
					t.Logf("attempt %d: %v; again on other ports", attempt, err)
					goto next
				}
				t.Fatalf("the daemon stopped: %v", err)
			case <-time.After(50 * time.Millisecond):
			}
			if resp, err := http.Get("http://" + httpAddr + "/healthz"); err == nil {
				resp.Body.Close()
				return httpAddr, done, stop
			}
		}
	next:
	}
}
