package fleet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/leafwatch/leafwatch/internal/bundle"
)

// Model is a model that can label examples: the serving one or a
// candidate.
type Model interface {
	Version() string
	SHA256() string
	Labels() []string
	// Predict returns each example's top class.
	Predict(ctx context.Context, ex []Example) ([]string, error)
}

// Candidate is a loaded model not yet serving.
type Candidate interface {
	Model
	Close()
}

// Host is what the daemon provides.
type Host interface {
	// Serving is the model serving now.
	Serving() Model
	// Load loads the checkpoint at path, checks it against m (unless m is
	// zero: a previous model deployed by hand) and proves it runs.
	Load(ctx context.Context, path string, m bundle.Manifest) (Candidate, error)
	// Install makes c serve; its file is already at the model path.
	Install(c Candidate) error
	// Examples are the labelled samples (not "unsure"), oldest first.
	Examples(ctx context.Context) ([]Example, error)
	// Publish sends the update state (durable: a transition, kept across
	// outages and restarts; else progress).
	Publish(s State, durable bool)
}

// Options set up an Updater.
type Options struct {
	Config    Config
	Group     string
	Dir       string // the updater's folder (state_dir/fleet)
	ModelPath string // the daemon's checkpoint
	Host      Host
	Log       *slog.Logger
	Client    *http.Client  // default: TLS verified with ca_file or the system's CAs
	RetryWait time.Duration // after a failed download (default 1 min, doubling to 1 h)
	Stall     time.Duration // a server silent this long is given up on (default 60 s)
}

// Updater takes announced models. One worker does everything in turn, so
// a rollback never meets a half-done install.
type Updater struct {
	opt    Options
	ring   *bundle.Keyring
	client *http.Client
	log    *slog.Logger
	jobs   chan job

	mu          sync.Mutex
	mem         memory
	offered     *Announcement
	state       State
	installedAt time.Time // of the last install by this process (monotonic), for the rollback window
	retryAt     time.Time
	retryWait   time.Duration
}

type job struct {
	kind string // offer, install, rollback
	why  string
	done chan error // nil: nobody waits
}

// New prepares an updater; Run starts it.
func New(opt Options) (*Updater, error) {
	ring, err := bundle.LoadKeyring(opt.Config.TrustedKeys)
	if err != nil {
		return nil, err
	}
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.RetryWait <= 0 {
		opt.RetryWait = time.Minute
	}
	u := &Updater{opt: opt, ring: ring, client: opt.Client, log: opt.Log.With("component", "fleet"), jobs: make(chan job, 8), retryWait: opt.RetryWait}
	if u.client == nil {
		if u.client, err = httpClient(opt.Config.CAFile); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(filepath.Join(opt.Dir, "download"), 0o750); err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	if u.mem, err = loadMemory(u.memPath()); err != nil {
		u.log.Error("update history unreadable", "err", err)
	}
	if u.mem.Refused == nil {
		u.mem.Refused = map[string]string{}
	}
	return u, nil
}

func httpClient(caFile string) (*http.Client, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("models.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("models.ca_file %s: no PEM certificate in it", caFile)
		}
		tc.RootCAs = pool
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	tr.ResponseHeaderTimeout = time.Minute
	return &http.Client{Transport: tr}, nil
}

func (u *Updater) memPath() string      { return filepath.Join(u.opt.Dir, "state.json") }
func (u *Updater) previousPath() string { return filepath.Join(u.opt.Dir, "previous.safetensors") }
func (u *Updater) partPath(sha string) string {
	return filepath.Join(u.opt.Dir, "download", sha+".part")
}

// Warnings are said at every start.
func (u *Updater) Warnings() []string {
	var w []string
	if u.opt.Config.AllowUnsigned {
		w = append(w, "models.allow_unsigned is on: this device installs models nobody signed; use it in a lab only")
	}
	if u.ring.Len() == 0 && !u.opt.Config.AllowUnsigned {
		w = append(w, "models.trusted_keys is empty: every announced model will be refused until a key is trusted")
	}
	return w
}

// Offer hands over an announcement's payload (from the MQTT handler; it
// does not block). An empty payload withdraws the offer.
func (u *Updater) Offer(payload []byte) {
	a, ok, err := ParseAnnouncement(payload)
	u.mu.Lock()
	switch {
	case err != nil:
		u.offered = nil
		u.mu.Unlock()
		u.log.Warn("model announcement refused", "err", err)
		u.publish(State{State: StateRefused, Reason: "announcement unreadable: " + err.Error()}, true)
		return
	case !ok:
		u.offered = nil
	default:
		u.offered = &a
	}
	u.mu.Unlock()
	u.enqueue(job{kind: "offer"})
}

func (u *Updater) enqueue(j job) {
	select {
	case u.jobs <- j:
	default:
		if j.done != nil {
			j.done <- errors.New("busy: too many update requests waiting")
		}
		// an offer is coalesced: the worker reads the latest one
	}
}

// Install runs the offered model's update now (the install command):
// whatever auto_install says, and even if it was refused before (the
// labels may have changed since). It returns once the work is queued.
func (u *Updater) Install() (string, error) {
	u.mu.Lock()
	a := u.offered
	u.mu.Unlock()
	if a == nil {
		return "", errors.New("no model is announced to this device's group")
	}
	u.enqueue(job{kind: "install"})
	return a.Version, nil
}

// Rollback serves the previous model again and waits for the outcome.
func (u *Updater) Rollback(ctx context.Context, why string) error {
	done := make(chan error, 1)
	u.enqueue(job{kind: "rollback", why: why, done: done})
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("rollback still running: %w", ctx.Err())
	}
}

// EngineFailed is told of an engine failure; within rollback_window of an
// install by this updater it rolls back by itself.
func (u *Updater) EngineFailed(cause error) {
	u.mu.Lock()
	at := u.installedAt
	u.mu.Unlock()
	if at.IsZero() || time.Since(at) > u.opt.Config.RollbackWindow {
		return
	}
	u.log.Error("the engine failed soon after a model update; rolling back", "since_install", time.Since(at).Round(time.Second), "err", cause)
	u.enqueue(job{kind: "rollback", why: fmt.Sprintf("the engine failed %v after the install: %v", time.Since(at).Round(time.Second), cause)})
}

// Status is the last state published.
func (u *Updater) Status() State {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.state
}

// Run works until ctx ends.
func (u *Updater) Run(ctx context.Context) {
	for _, w := range u.Warnings() {
		u.log.Warn(w)
	}
	serving := u.opt.Host.Serving().Version()
	first := State{State: StateIdle}
	if l := u.mem.Last; l != nil && l.InstalledVersion == serving {
		first = *l // what was said last still holds
	}
	u.publish(first, true)
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-u.jobs:
			err := u.do(ctx, j)
			if j.done != nil {
				j.done <- err
			}
		case <-retry.C:
			u.do(ctx, job{kind: "offer"})
		}
		u.mu.Lock()
		at := u.retryAt
		u.mu.Unlock()
		if !at.IsZero() {
			retry.Reset(time.Until(at))
		}
	}
}

func (u *Updater) do(ctx context.Context, j job) error {
	u.mu.Lock()
	u.retryAt = time.Time{}
	u.mu.Unlock()
	switch j.kind {
	case "rollback":
		err := u.rollback(ctx, j.why)
		if err != nil {
			u.log.Error("rollback failed; the current model keeps serving", "err", err)
		}
		return err
	default:
		return u.update(ctx, j.kind == "install")
	}
}
