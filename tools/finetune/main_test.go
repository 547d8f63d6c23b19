package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/leafwatch/leafwatch/internal/bundle"
	"github.com/leafwatch/leafwatch/internal/selfexec"
	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/tools/finetune/train"
	"github.com/leafwatch/leafwatch/vision"
)

// TestMain lets the test binary run as finetune (FINETUNE_TEST_ARGS, unit-separator
// separated), so tests can interrupt a real process.
func TestMain(m *testing.M) {
	if args := os.Getenv("FINETUNE_TEST_ARGS"); args != "" {
		os.Args = append([]string{"finetune"}, strings.Split(args, "\x1f")...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func finetune(args ...string) *exec.Cmd {
	cmd := selfexec.Command("-test.run=^$")
	cmd.Env = append(os.Environ(), "FINETUNE_TEST_ARGS="+strings.Join(args, "\x1f"))
	return cmd
}

func TestRestoreFlags(t *testing.T) {
	saved := map[string]string{"data": "/d", "train-from": "fc6", "lr": "0.005", "epochs": "2", "seed": "7", "cache-features": "true", "base": "/w/imagenet.safetensors"}
	cases := []struct {
		name    string
		args    []string
		wantErr string
		check   map[string]string
	}{
		{"only --resume restores all", nil, "", map[string]string{"train-from": "fc6", "epochs": "2", "seed": "7", "cache-features": "true", "data": "/d"}},
		{"epochs may change", []string{"--epochs", "4"}, "", map[string]string{"epochs": "4", "train-from": "fc6"}},
		{"the same value is fine", []string{"--lr", "0.0050", "--train-from", "fc6"}, "", map[string]string{"lr": "0.005"}},
		{"data may move", []string{"--data", "/elsewhere"}, "", map[string]string{"data": "/elsewhere"}},
		{"unfreezing is refused", []string{"--train-from", "conv1"}, "--train-from conv1 (the run has fc6)", nil},
		{"another seed is refused", []string{"--seed", "8", "--lr", "0.1"}, "--seed 8", nil},
		{"the same base by a relative path", []string{"--base", "/w/./imagenet.safetensors"}, "", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("train", flag.ContinueOnError)
			for _, name := range recordedFlags {
				fs.String(name, "default", "")
			}
			fs.Parse(tc.args)
			given := map[string]bool{}
			fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
			// Float normalisation as the real flags do it.
			if given["lr"] {
				fs.Set("lr", "0.005")
			}
			err := restoreFlags(fs, given, saved)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.check {
				if got := fs.Lookup(k).Value.String(); got != v {
					t.Errorf("--%s = %s, want %s", k, got, v)
				}
			}
		})
	}
}

func TestReadLabels(t *testing.T) {
	dir := t.TempDir()
	for name, tc := range map[string]struct{ text, err string }{
		"fine":          {"a\nb\r\nc\n\n", ""},
		"blank line":    {"a\n\nb\n", "line 2 is empty"},
		"spaces only":   {"a\n   \nb", "line 2 is empty"},
		"repeated":      {"a\nb\na\n", "line 3 repeats \"a\" from line 1"},
		"empty file":    {"", "line 1 is empty"},
		"leading blank": {"\na\n", "line 1 is empty"},
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(tc.text), 0o644)
		labels, err := readLabels(p)
		if tc.err == "" {
			if err != nil || strings.Join(labels, ",") != "a,b,c" {
				t.Errorf("%s: %q %v", name, labels, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %v, want %q", name, err, tc.err)
		}
	}
	// And a checkpoint with an empty label is never written.
	m, _ := model.NewRandom(model.TorchVision, 3, 1)
	m.Meta.Labels = []string{"a", "", "c"}
	if err := m.Save(filepath.Join(dir, "x.safetensors")); err == nil || !strings.Contains(err.Error(), "label 1 is empty") {
		t.Errorf("saving an empty label: %v", err)
	}
}

func TestContinueCommand(t *testing.T) {
	args := []string{"bin/finetune", "train", "--data", "/my data/leaves", "--out", "run1", "--train-from", "fc6"}
	if got, want := continueCommand(args, ""), "bin/finetune train --data '/my data/leaves' --out run1 --train-from fc6"; got != want {
		t.Errorf("while caching: %s, want %s", got, want)
	}
	if got, want := continueCommand(args, "run1/state.safetensors"), "bin/finetune train --resume run1/state.safetensors"; got != want {
		t.Errorf("while training: %s, want %s", got, want)
	}
}

// TestPredictNamesAFileOnce: an unreadable file is reported by name once,
// with the reason, and the others are still classified.
func TestPredictNamesAFileOnce(t *testing.T) {
	dir := t.TempDir()
	if err := train.WriteSynth(dir, []string{"Tomato___healthy", "Tomato___Late_blight"}, 1, 1); err != nil {
		t.Fatal(err)
	}
	good, _ := filepath.Glob(filepath.Join(dir, "*", "*.jpg"))
	bad := filepath.Join(dir, "cut.jpg")
	b, _ := os.ReadFile(good[0])
	os.WriteFile(bad, b[:len(b)/3], 0o644)
	m, _ := model.NewRandom(model.TorchVision, 2, 1)
	m.Meta.Labels = []string{"Tomato___healthy", "Tomato___Late_blight"}
	p, err := train.NewPredictor(m, vision.Regions{}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var out, errs bytes.Buffer
	err = predictFiles(context.Background(), &out, &errs, p, []string{bad, good[0]}, 2)
	if err == nil || !strings.Contains(err.Error(), "1 of 2") {
		t.Errorf("result %v", err)
	}
	if n := strings.Count(errs.String(), bad); n != 1 || !strings.Contains(errs.String(), "truncated JPEG") {
		t.Errorf("error output names the file %d times: %q", n, errs.String())
	}
	if !strings.Contains(out.String(), good[0]) || !strings.Contains(out.String(), "%") {
		t.Errorf("the good file was not classified: %q", out.String())
	}
}

// TestTrainCommandInterruptResumeRestore runs finetune as a process: Ctrl-C
// while caching features exits 130 and says what to run; running that
// continues the cache; --resume alone restores the run's settings (the
// convolutions stay frozen), a contradicting flag is refused, eval lists
// what it skipped, predict takes the daemon's --precision (and refuses an
// unknown one), and --lr Inf is refused before any work.
func TestTrainCommandInterruptResumeRestore(t *testing.T) {
	if testing.Short() {
		t.Skip("AlexNet in -short mode")
	}
	data, out := filepath.Join(t.TempDir(), "data"), t.TempDir()
	if err := train.WriteSynth(data, []string{"Tomato___healthy", "Tomato___Late_blight", "Tomato___Leaf_Mold"}, 16, 3); err != nil {
		t.Fatal(err)
	}
	args := []string{"train", "--data", data, "--out", out, "--train-from", "fc6", "--cache-features", "--epochs", "1", "--batch", "4", "--lr", "0.0001"}
	cmd := finetune(args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		parts, _ := filepath.Glob(filepath.Join(out, "features", "*.partial"))
		if len(parts) == 1 {
			if st, err := os.Stat(parts[0]); err == nil && st.Size() > 64+2*9216*4*4 {
				break
			}
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no features cached within 2 minutes:\n%s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("exit %v after Ctrl-C while caching:\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "interrupted while caching features") || !strings.Contains(stderr.String(), "to continue: finetune train --data") {
		t.Errorf("no hint after Ctrl-C:\n%s", stderr.String())
	}

	run := func(args ...string) (string, error) {
		var b bytes.Buffer
		cmd := finetune(args...)
		cmd.Stderr, cmd.Stdout = &b, &b
		err := cmd.Run()
		return b.String(), err
	}
	log, err := run(args...)
	if err != nil || !strings.Contains(log, "already_done=") || strings.Contains(log, "already_done=0 ") {
		t.Fatalf("rerun (%v) did not continue the cache:\n%s", err, log)
	}
	state := filepath.Join(out, "state.safetensors")
	log, err = run("train", "--resume", state, "--epochs", "2")
	if err != nil || !strings.Contains(log, "train_from=fc6") || !strings.Contains(log, "reusing cached features") {
		t.Fatalf("resume (%v):\n%s", err, log)
	}
	_, _, st, err := train.LoadState(state)
	if err != nil || st.Epoch != 2 {
		t.Fatalf("after the extension: epoch %d, %v", st.Epoch, err)
	}
	if log, err = run("train", "--resume", state, "--train-from", "conv1"); err == nil || !strings.Contains(log, "--train-from conv1 (the run has fc6)") {
		t.Errorf("contradicting resume (%v):\n%s", err, log)
	}
	os.WriteFile(filepath.Join(data, "Tomato___healthy", "notes.txt"), []byte("watered on Monday"), 0o644)
	if log, err = run("eval", "--model", filepath.Join(out, "best.safetensors"), "--data", data, "--out", t.TempDir()); err != nil ||
		!strings.Contains(log, "1 files skipped") || !strings.Contains(log, "notes.txt: not an image file") {
		t.Errorf("eval (%v) does not mention the skipped file:\n%s", err, log)
	}
	leaf, _ := filepath.Glob(filepath.Join(data, "Tomato___healthy", "*.jpg"))
	if log, err = run("predict", "--model", filepath.Join(out, "best.safetensors"), "--precision", "fp32", leaf[0]); err != nil || !strings.Contains(log, "%") {
		t.Errorf("predict --precision fp32 (%v):\n%s", err, log)
	}
	if log, err = run("predict", "--model", filepath.Join(out, "best.safetensors"), "--precision", "fp8", leaf[0]); err == nil || !strings.Contains(log, "--precision") || !strings.Contains(log, "fp8") {
		t.Errorf("predict --precision fp8 (%v):\n%s", err, log)
	}
	// The run left a manifest beside best; keygen and sign add the
	// signature a device checks.
	best := filepath.Join(out, "best.safetensors")
	man, err := bundle.ReadBeside(best)
	if err != nil || man.Sig != nil || man.Manifest.Evaluation["val"].Samples == 0 {
		t.Fatalf("the manifest train wrote: %+v %v", man.Manifest, err)
	}
	keys := t.TempDir()
	if log, err = run("keygen", filepath.Join(keys, "release")); err != nil || !strings.Contains(log, "release.pub") {
		t.Fatalf("keygen (%v):\n%s", err, log)
	}
	if log, err = run("sign", "--key", filepath.Join(keys, "release.key"), "--summary", "first greenhouse model", best); err != nil || !strings.Contains(log, "signed model") {
		t.Fatalf("sign (%v):\n%s", err, log)
	}
	key, _ := os.ReadFile(filepath.Join(keys, "release.key"))
	if strings.Contains(log, strings.TrimSpace(strings.SplitN(string(key), "\n", 2)[1])[:40]) {
		t.Error("sign printed the private key")
	}
	ring, _ := bundle.LoadKeyring([]string{filepath.Join(keys, "release.pub")})
	if man, err = bundle.ReadBeside(best); err != nil {
		t.Fatal(err)
	}
	if _, err := man.Verify(ring, false); err != nil || man.Manifest.Summary != "first greenhouse model" || man.Manifest.Evaluation["val"].Samples == 0 {
		t.Errorf("signed bundle: %v %+v", err, man.Manifest)
	}
	if err := man.Manifest.CheckCheckpoint(best); err != nil {
		t.Error(err)
	}
	if log, err = run("sign", "--key", filepath.Join(keys, "release.pub"), best); err == nil || !strings.Contains(log, "not a minisign private key") {
		t.Errorf("signing with the public key (%v):\n%s", err, log)
	}
	start := time.Now()
	if log, err = run("train", "--data", data, "--out", t.TempDir(), "--lr", "Inf"); err == nil || !strings.Contains(log, "learning rate +Inf") || strings.Contains(log, "dataset") {
		t.Errorf("--lr Inf (%v):\n%s", err, log)
	}
	t.Logf("--lr Inf refused in %v", time.Since(start).Round(time.Millisecond))
}
