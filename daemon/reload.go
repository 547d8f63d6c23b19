package daemon

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/leafwatch/leafwatch/daemon/fleet"
	"github.com/leafwatch/leafwatch/internal/bundle"
	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/model/cpu"
	"github.com/leafwatch/leafwatch/model/engine"
	"github.com/leafwatch/leafwatch/mqtt"
)

// reloadState serialises model reloads, spaces them by
// reload_min_interval and coalesces requests that wait.
type reloadState struct {
	gate     sync.Mutex // held for a whole reload
	swap     sync.Mutex // held while the serving engine is replaced
	mu       sync.Mutex // guards the fields below
	started  uint64     // reloads begun
	lastAt   time.Time  // when the last reload began (monotonic reading)
	lastErr  error      // the outcome of the last reload
	modelMod time.Time  // modification time of the file serving
}

// loadModel loads and fully checks the checkpoint, then swaps it in. On
// any failure the current model keeps serving. At most the old and the new
// model are held: the old engine is closed and its memory handed back
// right after the swap.
func (d *Daemon) loadModel() error {
	st, err := os.Stat(d.cfg.Model)
	if err != nil {
		return fmt.Errorf("model: %w", err)
	}
	var man bundle.Manifest
	if d.cfg.Models.Local == fleet.LocalSigned {
		// Signed only: the file needs a manifest and a trusted signature
		// beside it, as a fleet bundle has; a renamed-in file without them
		// is refused.
		if man, err = d.checkSignedLocal(); err != nil {
			return err
		}
	}
	c, err := d.prepareEngine(d.cfg.Model, man)
	if err != nil {
		return err
	}
	d.swapIn(c, st.ModTime())
	return nil
}

// checkSignedLocal reads and verifies the manifest and signature beside
// the model file.
func (d *Daemon) checkSignedLocal() (bundle.Manifest, error) {
	s, err := bundle.ReadBeside(d.cfg.Model)
	if err != nil {
		return bundle.Manifest{}, fmt.Errorf("models.local is signed: %w", err)
	}
	ring, err := bundle.LoadKeyring(d.cfg.Models.TrustedKeys)
	if err != nil {
		return bundle.Manifest{}, err
	}
	if _, err := s.Verify(ring, d.cfg.Models.AllowUnsigned); err != nil {
		return bundle.Manifest{}, fmt.Errorf("models.local is signed: %s: %w", bundle.SignaturePath(d.cfg.Model), err)
	}
	return s.Manifest, nil
}

// prepareEngine loads a checkpoint, checks it against man (unless zero),
// builds the configured engine and proves it runs with a test inference.
// Nothing serves it yet.
func (d *Daemon) prepareEngine(path string, man bundle.Manifest) (model.Engine, error) {
	m, err := model.Load(path)
	if err != nil {
		return nil, err
	}
	if man.SHA256 != "" {
		if err := man.CheckMeta(m.Meta); err != nil {
			return nil, fmt.Errorf("model %s does not match its manifest: %w", path, err)
		}
	}
	c, err := engine.Select(m, d.cfg.Engine, d.engineOptions(), d.log)
	if err != nil {
		return nil, err
	}
	if wrap := testWrapEngine.Load(); wrap != nil {
		c = (*wrap)(c)
	}
	// A test inference proves the model runs before it replaces the old one.
	probe := make([]float32, m.InputLen())
	if _, err := c.Classify(context.Background(), probe, 1, 1); err != nil {
		c.Close()
		return nil, fmt.Errorf("model %s: test inference failed: %w", path, err)
	}
	return c, nil
}

// testWrapEngine, set by tests only, wraps every engine prepared (to make
// one fail as a lost CUDA context does).
var testWrapEngine atomic.Pointer[func(model.Engine) model.Engine]

// swapIn makes c serve; modTime is the model file's, so the file watcher
// does not load it again.
func (d *Daemon) swapIn(c model.Engine, modTime time.Time) {
	m := c.Model()
	d.reloads.swap.Lock()
	old := d.serving.Swap(newEngineBox(c))
	d.reloads.swap.Unlock()
	d.reloads.mu.Lock()
	d.reloads.modelMod = modTime
	d.reloads.mu.Unlock()
	d.met.setModel(m.Meta.Version)
	d.met.setEngine(c.Engine())
	d.fallback.Store("")
	if old == nil {
		// Loading left garbage and the engine released the fp32 weights
		// it holds in another form; hand that memory back now rather than
		// at a GC that may be far away (a reload's retire does the same).
		debug.FreeOSMemory()
		attrs := []any{"path", d.cfg.Model, "version", m.Meta.Version, "variant", m.Spec.Variant, "classes", m.Spec.Classes, "engine", c.Engine(), "precision", precisionOf(c)}
		if _, onCPU := c.(*cpu.Classifier); onCPU {
			attrs = append(attrs, "blas", cpu.BLASInfo(), "threads", cpu.ThreadsInfo())
		}
		d.log.Info("model loaded", attrs...)
		if note := cpu.BLASTuneNote(); note != "" {
			d.log.Info(note)
		}
		if cpu.BLASCoreIsGeneric() {
			d.log.Warn("OpenBLAS picked a generic CPU kernel; set OPENBLAS_CORETYPE (e.g. SkylakeX or Haswell) for 3-6x faster inference", "blas", cpu.BLASInfo())
		}
		return
	}
	prev := old.e.Model()
	changed := !slices.Equal(prev.Meta.Labels, m.Meta.Labels)
	d.log.Info("model reloaded", "path", d.cfg.Model, "version", m.Meta.Version, "previous", prev.Meta.Version)
	if changed {
		added, removed := labelDiff(prev.Meta.Labels, m.Meta.Labels)
		d.log.Warn("THE MODEL'S CLASS SET CHANGED: labels in states and alerts change with it; dashboards keyed on labels need updating",
			"classes_before", len(prev.Meta.Labels), "classes_now", len(m.Meta.Labels), "added", added, "removed", removed)
	}
	// Samples in flight finish on the old engine; the last of them frees
	// it (and its memory goes back to the OS then).
	old.retire()
	if d.pub != nil {
		d.publishModelInfo(changed)
		if changed {
			d.pub.RepublishDiscovery()
		}
	}
}

// labelDiff lists the labels only in b (added) and only in a (removed).
func labelDiff(a, b []string) (added, removed []string) {
	for _, l := range b {
		if !slices.Contains(a, l) {
			added = append(added, l)
		}
	}
	for _, l := range a {
		if !slices.Contains(b, l) {
			removed = append(removed, l)
		}
	}
	return added, removed
}

func (d *Daemon) publishModelInfo(labelsChanged bool) {
	e := d.engine()
	m := e.Model()
	info := mqtt.ModelInfo{Version: m.Meta.Version, Variant: string(m.Spec.Variant), Labels: m.Meta.Labels, Engine: e.Engine(),
		LabelsChanged: labelsChanged, Loaded: time.Now().UTC()}
	if err := d.pub.ModelInfo(info); err != nil {
		d.log.Error("model info not queued", "err", err)
	}
}

// Reload reloads the model and reports the outcome in the log, metrics
// and /readyz. Reloads run one at a time, at most one per
// reload_min_interval; a request made while another waits or runs is
// answered by the next reload that starts after it.
func (d *Daemon) Reload(why string) error { return d.reload(why, nil) }

// reload is Reload; a non-nil needed is asked once this request's turn
// has come, and false ends it without loading (the file watcher: a reload
// that ran meanwhile may already have loaded the file that changed).
func (d *Daemon) reload(why string, needed func() bool) error {
	r := &d.reloads
	r.mu.Lock()
	asked := r.started
	r.mu.Unlock()
	r.gate.Lock()
	defer r.gate.Unlock()
	r.mu.Lock()
	if r.started > asked {
		// A reload began after this request was made: it read the newest
		// file, and its outcome is this request's.
		err := r.lastErr
		r.mu.Unlock()
		return err
	}
	wait := d.cfg.ReloadMinInterval - time.Since(r.lastAt)
	r.mu.Unlock()
	if needed != nil && !needed() {
		return nil
	}
	if !r.lastAt.IsZero() && wait > 0 {
		d.log.Info("model reload waits for reload_min_interval", "trigger", why, "wait", wait.Round(time.Millisecond))
		time.Sleep(wait)
	}
	r.mu.Lock()
	r.started++
	r.lastAt = time.Now()
	r.mu.Unlock()
	d.met.reloading.Set(1)
	err := d.loadModel()
	d.met.reloading.Set(0)
	r.mu.Lock()
	r.lastErr = err
	r.mu.Unlock()
	if err != nil {
		d.met.reloadFail.Inc()
		d.lastError.Store(err.Error())
		d.log.Error("model reload refused; the previous model keeps serving", "trigger", why, "err", err)
		return err
	}
	d.lastError.Store("")
	d.met.reloadOK.Inc()
	return nil
}

// watchModelFile reloads when the checkpoint's modification time changes
// (checked every 5 s). A file that fails is not retried until it changes.
func (d *Daemon) watchModelFile(ctx context.Context) {
	every(ctx, 5*time.Second, func() bool {
		st, err := os.Stat(d.cfg.Model)
		if err != nil {
			return true
		}
		d.reloads.mu.Lock()
		changed := !st.ModTime().Equal(d.reloads.modelMod)
		d.reloads.mu.Unlock()
		if changed {
			// Wait for a writer that is still copying before reading.
			time.Sleep(time.Second)
			unseen := func() bool {
				now, err := os.Stat(d.cfg.Model)
				d.reloads.mu.Lock()
				defer d.reloads.mu.Unlock()
				return err == nil && !now.ModTime().Equal(d.reloads.modelMod)
			}
			if d.reload("file changed", unseen) != nil {
				d.reloads.mu.Lock()
				d.reloads.modelMod = st.ModTime()
				d.reloads.mu.Unlock()
			}
		}
		return true
	})
}

// fallBack replaces an engine that reported model.ErrEngineFailed (a CUDA
// context lost to a sticky error) with the CPU engine for the same model,
// so the daemon keeps classifying instead of failing every sample while the
// watchdog is still fed. The next successful reload tries the configured
// engine again. It reports whether the engine now serving differs from
// failed.
func (d *Daemon) fallBack(failed model.Engine, cause error) bool {
	d.reloads.swap.Lock()
	defer d.reloads.swap.Unlock()
	if d.engine() != failed {
		return true // another sample or a reload already replaced it
	}
	m, err := d.fallbackModel(failed.Model())
	if err != nil {
		d.log.Error("inference engine failed; no CPU fallback until the next model reload", "failed", failed.Engine(), "err", cause, "fallback_err", err)
		return false
	}
	cpu := cpu.NewClassifier(m, d.engineOptions())
	old := d.serving.Swap(newEngineBox(cpu))
	why := fmt.Sprintf("%s failed at %s (%v); serving on %s until the next model reload or restart",
		failed.Engine(), time.Now().UTC().Format(time.RFC3339), cause, cpu.Engine())
	d.fallback.Store(why)
	d.met.engineFallbacks.Inc()
	d.met.setEngine(cpu.Engine())
	d.log.Error("inference engine failed; falling back to the CPU", "failed", failed.Engine(), "err", cause, "now", cpu.Engine())
	old.retire() // closed when the samples using it (the caller's included) end
	if d.updater != nil {
		d.updater.EngineFailed(cause) // soon after an update: roll back
	}
	return true
}

// fallbackModel is the model a CPU fallback serves: served itself when it
// kept its weights, else (the CUDA engine released the host copy once it
// was on the device) the checkpoint loaded again — if it is still the same
// model: a file replaced meanwhile is for the reload its watcher starts.
func (d *Daemon) fallbackModel(served *model.Model) (*model.Model, error) {
	if served.Whole("") == nil {
		return served, nil
	}
	m, err := model.Load(d.cfg.Model)
	if err != nil {
		return nil, fmt.Errorf("the engine held the weights on the device; loading them again: %w", err)
	}
	if m.Meta.Version != served.Meta.Version { // a hash of the file
		return nil, fmt.Errorf("%s now holds model %q, not the %q that was serving; the reload will serve it", d.cfg.Model, m.Meta.Version, served.Meta.Version)
	}
	return m, nil
}

// engineOptions are the engine settings from the config: the CPU engine's
// precision and batch, and for any engine (CUDA too) the batch and the
// release of weights held in another form.
func (d *Daemon) engineOptions() model.Options {
	p, _ := model.ParsePrecision(d.cfg.Precision) // validated with the config
	mb := model.DefaultMaxBatch
	if len(d.cfg.Cameras) > 1 {
		// Merged calls of several cameras (batcher) run in bigger batches:
		// measured ~5% more frames/s with 4 cameras × 7 tiles (8.3 → 8.8),
		// for ~20 MB more activation buffers.
		mb = 2 * model.DefaultMaxBatch
	}
	// The daemon's model serves only its engine (a reload loads the file
	// again), so the engine may drop the fp32 weights it holds in another
	// form or on the device: the CPU engine in fp16 holds ~155 MB instead
	// of ~375.
	return model.Options{MaxBatch: mb, Precision: p, ReleaseWeights: true}
}
