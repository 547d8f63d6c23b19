package fleet

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leafwatch/leafwatch/internal/bundle"
)

const (
	blight  = "Tomato___Late_blight"
	healthy = "Tomato___healthy"
)

// TestUpdateOutcomes offers one announcement per case and checks what the
// device did: the state it said, the model serving, the files left.
func TestUpdateOutcomes(t *testing.T) {
	cases := []struct {
		name     string
		serving  string // the label the serving model answers
		offered  string // the candidate's
		labelled int    // baseline samples labelled blight
		cfg      func(*Config)
		mutate   func(t *testing.T, r *release, srvDir string, other *bundle.Signer)
		unsigned bool
		state    string
		reason   string
	}{
		{name: "better on the labelled samples: taken", serving: healthy, offered: blight, labelled: 25, state: StateInstalled},
		{name: "worse on the labelled samples: refused", serving: blight, offered: healthy, labelled: 25, state: StateRefused,
			reason: "refused on 25 baseline samples: candidate 0.0% vs serving 100.0%"},
		{name: "worse but within tolerance: taken", serving: blight, offered: healthy, labelled: 25, state: StateInstalled,
			cfg: func(c *Config) { c.Tolerance = 100 }},
		{name: "too few labelled samples: taken, and said", serving: blight, offered: healthy, labelled: 3, state: StateInstalled},
		{name: "too few labelled samples, refuse configured", serving: blight, offered: healthy, labelled: 3, state: StateRefused,
			cfg: func(c *Config) { c.WithoutSamples = "refuse" }, reason: "fewer than min_samples 20: refused"},
		{name: "a byte of the served checkpoint changed", serving: healthy, offered: blight, labelled: 25, state: StateFailed,
			reason: "does not match the signed manifest",
			mutate: func(t *testing.T, r *release, srvDir string, _ *bundle.Signer) {
				b, _ := os.ReadFile(r.ckpt)
				b[len(b)-10] ^= 1
				os.WriteFile(r.ckpt, b, 0o644)
			}},
		{name: "manifest edited after signing", serving: healthy, offered: blight, labelled: 25, state: StateRefused, reason: "signature",
			mutate: func(t *testing.T, r *release, _ string, _ *bundle.Signer) {
				r.ann.Manifest = strings.Replace(r.ann.Manifest, "test model", "best model", 1)
			}},
		{name: "signed by an untrusted key", serving: healthy, offered: blight, labelled: 25, state: StateRefused, reason: "not accepted",
			mutate: func(t *testing.T, r *release, _ string, other *bundle.Signer) {
				if _, err := bundle.SignCheckpoint(other, r.ckpt, ""); err != nil {
					t.Fatal(err)
				}
				sig, _ := os.ReadFile(bundle.SignaturePath(r.ckpt))
				r.ann.Signature = string(sig)
			}},
		{name: "unsigned", serving: healthy, offered: blight, labelled: 25, unsigned: true, state: StateRefused, reason: "not signed"},
		{name: "unsigned, allowed in a lab", serving: healthy, offered: blight, labelled: 25, unsigned: true, state: StateInstalled,
			cfg: func(c *Config) { c.AllowUnsigned = true }},
		{name: "announcement's hash differs from its manifest", serving: healthy, offered: blight, labelled: 25, state: StateRefused, reason: "its manifest says",
			mutate: func(t *testing.T, r *release, _ string, _ *bundle.Signer) { r.ann.SHA256 = strings.Repeat("0", 64) }},
		{name: "model that does not run", serving: healthy, offered: "crash", labelled: 25, state: StateRefused, reason: "does not run"},
		{name: "not on the server", serving: healthy, offered: blight, labelled: 25, state: StateFailed, reason: "404",
			mutate: func(t *testing.T, r *release, _ string, _ *bundle.Signer) { r.ann.URL += ".gone" }},
		{name: "larger than max_mb", serving: healthy, offered: blight, labelled: 25, state: StateFailed, reason: "too large",
			cfg: func(c *Config) { c.MaxMB = 0 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, srvDir := t.TempDir(), t.TempDir()
			h := newHost(t, dir, tc.serving)
			h.label(tc.labelled, blight, true)
			h.label(5, healthy, false) // labelled but not baseline: the baseline set is used
			key, pub := newSigner(t, t.TempDir(), "release")
			other, _ := newSigner(t, t.TempDir(), "other")
			srv := newFileServer(t, srvDir)
			signer := key
			if tc.unsigned {
				signer = nil
			}
			r := makeRelease(t, srvDir, "m.safetensors", tc.offered, 64<<10, signer, srv.Server)
			if tc.mutate != nil {
				tc.mutate(t, &r, srvDir, other)
			}
			cfg := DefaultConfig()
			cfg.TrustedKeys = []string{pub}
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			before, _ := os.ReadFile(h.modelPath)
			servingBefore := h.Serving().Version()
			u := startUpdater(t, h, dir, cfg)
			u.Offer(r.ann.Marshal())
			st := h.waitState(t, tc.state, func(s State) bool {
				return s.State == StateInstalled || s.State == StateRefused || s.State == StateFailed
			})
			if st.State != tc.state || !strings.Contains(st.Reason, tc.reason) {
				t.Fatalf("state %s (%s), want %s (%s)", st.State, st.Reason, tc.state, tc.reason)
			}
			after, _ := os.ReadFile(h.modelPath)
			if tc.state == StateInstalled {
				if st.InstalledVersion != r.ann.Version || st.LatestVersion != r.ann.Version || st.PreviousVersion != servingBefore {
					t.Errorf("installed state: %+v", st)
				}
				if st.Acceptance == nil || st.Acceptance.Rule == "" {
					t.Errorf("no acceptance figures: %+v", st)
				}
				if prev, _ := os.ReadFile(filepath.Join(dir, "fleet", "previous.safetensors")); !bytes.Equal(prev, before) {
					t.Error("the previous model was not kept")
				}
				if s, err := bundle.ReadBeside(h.modelPath); err != nil || s.Manifest.SHA256 != r.ann.SHA256 {
					t.Errorf("manifest beside the model: %v", err)
				}
				return
			}
			if !bytes.Equal(after, before) || h.Serving().Version() != servingBefore || st.InstalledVersion != servingBefore {
				t.Error("the serving model changed")
			}
			if parts, _ := filepath.Glob(filepath.Join(dir, "fleet", "download", "*.part")); tc.state == StateRefused && len(parts) > 0 {
				t.Errorf("a refused download was left: %v", parts)
			}
			if st.LatestVersion != st.InstalledVersion && tc.state == StateRefused {
				t.Errorf("a refused model is still offered to Home Assistant: %+v", st)
			}
		})
	}
}

// TestRefusedIsNotRetriedButInstallRetries: the retained announcement of a
// refused model comes again at every reconnect; it is not downloaded
// again. The install command compares again (more samples may be
// labelled since).
func TestRefusedIsNotRetriedButInstallRetries(t *testing.T) {
	dir, srvDir := t.TempDir(), t.TempDir()
	h := newHost(t, dir, blight)
	h.label(25, blight, true)
	key, pub := newSigner(t, t.TempDir(), "release")
	srv := newFileServer(t, srvDir)
	r := makeRelease(t, srvDir, "m.safetensors", healthy, 64<<10, key, srv.Server)
	cfg := DefaultConfig()
	cfg.TrustedKeys = []string{pub}
	u := startUpdater(t, h, dir, cfg)
	u.Offer(r.ann.Marshal())
	h.waitState(t, "refused", func(s State) bool { return s.State == StateRefused })
	n := srv.requests.Load()
	h.reset()
	u.Offer(r.ann.Marshal()) // a reconnect
	st := h.waitState(t, "refused again", func(s State) bool { return s.State == StateRefused })
	if srv.requests.Load() != n || !strings.Contains(st.Reason, "refused on 25") {
		t.Errorf("the refused model was fetched again (%d requests, was %d) or the reason lost: %+v", srv.requests.Load(), n, st)
	}
	// The grower labels 40 healthy baseline samples: now the candidate is
	// better (40 of 65 right vs 25).
	h.label(40, healthy, true)
	h.reset()
	if _, err := u.Install(); err != nil {
		t.Fatal(err)
	}
	st = h.waitState(t, "installed", func(s State) bool { return s.State == StateInstalled })
	if st.Acceptance.Samples != 65 || st.Acceptance.Candidate <= st.Acceptance.Serving {
		t.Errorf("acceptance: %+v", st.Acceptance)
	}
}

// TestRollback: by command, and by itself after an engine failure within
// the window; the rolled-back model's announcement is not taken again.
func TestRollback(t *testing.T) {
	for _, how := range []string{"command", "engine failure"} {
		t.Run(how, func(t *testing.T) {
			dir, srvDir := t.TempDir(), t.TempDir()
			h := newHost(t, dir, healthy)
			h.label(25, blight, true)
			key, pub := newSigner(t, t.TempDir(), "release")
			srv := newFileServer(t, srvDir)
			r := makeRelease(t, srvDir, "m.safetensors", blight, 64<<10, key, srv.Server)
			cfg := DefaultConfig()
			cfg.TrustedKeys = []string{pub}
			original, _ := os.ReadFile(h.modelPath)
			origVersion := h.Serving().Version()
			u := startUpdater(t, h, dir, cfg)
			ctx := context.Background()
			if err := u.Rollback(ctx, "test"); err == nil || !strings.Contains(err.Error(), "no previous model") {
				t.Errorf("rollback with nothing kept: %v", err)
			}
			u.Offer(r.ann.Marshal())
			h.waitState(t, "installed", func(s State) bool { return s.State == StateInstalled })
			if how == "command" {
				if err := u.Rollback(ctx, "rollback command"); err != nil {
					t.Fatal(err)
				}
			} else {
				u.EngineFailed(errors.New("CUDA context lost"))
			}
			st := h.waitState(t, "rolled back", func(s State) bool { return s.State == StateRolledBack })
			if now, _ := os.ReadFile(h.modelPath); !bytes.Equal(now, original) || h.Serving().Version() != origVersion || st.InstalledVersion != origVersion {
				t.Errorf("after rollback: serving %s, state %+v", h.Serving().Version(), st)
			}
			if _, err := os.Stat(bundle.ManifestPath(h.modelPath)); err == nil {
				t.Error("the rolled-back model's manifest stayed beside the previous model")
			}
			h.reset()
			u.Offer(r.ann.Marshal())
			st = h.waitState(t, "refused", func(s State) bool { return s.State == StateRefused })
			if !strings.Contains(st.Reason, "rolled back") {
				t.Errorf("re-announced after rollback: %+v", st)
			}
		})
	}
}

// TestEngineFailureOutsideWindow: a failure long after the install is the
// CPU fallback's business, not a rollback.
func TestEngineFailureOutsideWindow(t *testing.T) {
	dir, srvDir := t.TempDir(), t.TempDir()
	h := newHost(t, dir, healthy)
	key, pub := newSigner(t, t.TempDir(), "release")
	srv := newFileServer(t, srvDir)
	r := makeRelease(t, srvDir, "m.safetensors", blight, 64<<10, key, srv.Server)
	cfg := DefaultConfig()
	cfg.TrustedKeys, cfg.RollbackWindow = []string{pub}, 0
	u := startUpdater(t, h, dir, cfg)
	u.Offer(r.ann.Marshal())
	h.waitState(t, "installed", func(s State) bool { return s.State == StateInstalled })
	u.EngineFailed(errors.New("CUDA context lost"))
	time.Sleep(300 * time.Millisecond)
	if st := h.last(); st.State != StateInstalled || h.Serving().Version() != r.ann.Version {
		t.Errorf("rolled back outside the window: %+v", st)
	}
}

// TestAutoInstallOff: the offer waits for the install command, as Home
// Assistant shows it (latest_version ≠ installed_version); a withdrawal
// ends the offer.
func TestAutoInstallOff(t *testing.T) {
	dir, srvDir := t.TempDir(), t.TempDir()
	h := newHost(t, dir, healthy)
	key, pub := newSigner(t, t.TempDir(), "release")
	srv := newFileServer(t, srvDir)
	r := makeRelease(t, srvDir, "m.safetensors", blight, 64<<10, key, srv.Server)
	cfg := DefaultConfig()
	cfg.TrustedKeys, cfg.AutoInstall = []string{pub}, false
	u := startUpdater(t, h, dir, cfg)
	u.Offer(r.ann.Marshal())
	st := h.waitState(t, "available", func(s State) bool { return s.State == StateAvailable })
	if st.LatestVersion != r.ann.Version || st.InstalledVersion == st.LatestVersion || st.ReleaseSummary != "test model "+blight || srv.requests.Load() != 0 {
		t.Errorf("available: %+v (%d requests)", st, srv.requests.Load())
	}
	u.Offer(nil)
	h.waitState(t, "idle", func(s State) bool { return s.State == StateIdle })
	if _, err := u.Install(); err == nil {
		t.Error("install with nothing announced")
	}
	u.Offer(r.ann.Marshal())
	if _, err := u.Install(); err != nil {
		t.Fatal(err)
	}
	h.waitState(t, "installed", func(s State) bool { return s.State == StateInstalled })
}

// TestInterruptedDownloadsResume: a cut connection and a server that
// stops sending are retried, resuming where they stopped.
func TestInterruptedDownloadsResume(t *testing.T) {
	dir, srvDir := t.TempDir(), t.TempDir()
	h := newHost(t, dir, healthy)
	key, pub := newSigner(t, t.TempDir(), "release")
	srv := newFileServer(t, srvDir)
	r := makeRelease(t, srvDir, "m.safetensors", blight, 1<<20, key, srv.Server)
	cfg := DefaultConfig()
	cfg.TrustedKeys = []string{pub}
	srv.cutAt.Store(300 << 10)
	u, err := New(Options{Config: cfg, Group: "default", Dir: filepath.Join(dir, "fleet"), ModelPath: h.modelPath, Host: h, Log: quiet, Stall: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go u.Run(ctx)
	u.Offer(r.ann.Marshal())
	h.waitState(t, "installed", func(s State) bool { return s.State == StateInstalled })
	if srv.ranged.Load() == 0 {
		t.Error("the cut download started over instead of resuming")
	}
	// A stalled server, then a good one.
	r2 := makeRelease(t, srvDir, "m2.safetensors", healthy, 1<<20, key, srv.Server)
	srv.stall.Store(true)
	h.reset()
	u.Offer(r2.ann.Marshal())
	st := h.waitState(t, "installed", func(s State) bool { return s.State == StateInstalled })
	if st.InstalledVersion != r2.ann.Version {
		t.Errorf("after a stall: %+v", st)
	}
}

// TestDiskFull: a state directory that cannot hold the model fails the
// download before it starts, names the problem, and serves on.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a full disk is a small tmpfs here, and mounting one needs root")
	}
	dir, srvDir := t.TempDir(), t.TempDir()
	small := filepath.Join(dir, "small")
	os.Mkdir(small, 0o755)
	if out, err := execMount(small); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v %s", err, out)
	}
	t.Cleanup(func() { execUmount(small) })
	h := newHost(t, dir, healthy)
	key, pub := newSigner(t, t.TempDir(), "release")
	srv := newFileServer(t, srvDir)
	r := makeRelease(t, srvDir, "m.safetensors", blight, 1<<20, key, srv.Server)
	cfg := DefaultConfig()
	cfg.TrustedKeys = []string{pub}
	u, err := New(Options{Config: cfg, Group: "default", Dir: small, ModelPath: h.modelPath, Host: h, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go u.Run(ctx)
	u.Offer(r.ann.Marshal())
	st := h.waitState(t, "failed", func(s State) bool { return s.State == StateFailed })
	if !strings.Contains(st.Reason, "free space") || h.Serving().Version() == r.ann.Version {
		t.Errorf("disk full: %+v", st)
	}
}
