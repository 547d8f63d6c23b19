package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/model/gpu"
	"github.com/leafwatch/leafwatch/mqtt"
	"github.com/leafwatch/leafwatch/vision"
)

// Version is set at build time (-ldflags "-X ...daemon.Version=…").
var Version = "dev"

// Daemon is a running leafwatchd.
type Daemon struct {
	cfg   Config
	log   *slog.Logger
	clf   atomic.Pointer[engineBox]
	pub   *mqtt.Publisher
	brk   *mqtt.Broker
	snaps *vision.SnapshotDir
	cams  []*camRunner
	met   *metrics
	start time.Time

	reloadMu  sync.Mutex
	modelMod  time.Time
	beat      atomic.Int64 // unix nanos of the last pipeline iteration
	ready     atomic.Bool
	lastError atomic.Value // string: last reload error
	fallback  atomic.Value // string: why the configured engine was replaced by the CPU
}

// engineBox lets an interface live in an atomic.Pointer.
type engineBox struct{ e model.Engine }

// engine is the engine serving now.
func (d *Daemon) engine() model.Engine { return d.clf.Load().e }

// New loads the model and prepares every part; Run starts them.
func New(cfg Config, log *slog.Logger) (*Daemon, error) {
	d := &Daemon{cfg: cfg, log: log, start: time.Now(), met: newMetrics()}
	gpu.SetLibraryDirs(cfg.CUDALibs)
	if err := d.loadModel(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o750); err != nil {
		return nil, fmt.Errorf("state_dir: %w", err)
	}
	snaps, err := vision.OpenSnapshotDir(filepath.Join(cfg.StateDir, "snapshots"), int64(cfg.Snapshots.MaxMB)<<20)
	if err != nil {
		return nil, err
	}
	d.snaps = snaps
	for _, cc := range cfg.Cameras {
		src, err := vision.Open(cc.Source, log.With("camera", cc.Name))
		if err != nil {
			return nil, fmt.Errorf("camera %s: %w", cc.Name, err)
		}
		d.cams = append(d.cams, &camRunner{d: d, cfg: cc, src: src, dec: NewDecider(cfg.Device, cc.Name, cc.Decision), trigger: make(chan chan error, 1)})
	}
	return d, nil
}

// loadModel loads and fully checks the checkpoint, then swaps it in. On
// any failure the current model keeps serving.
func (d *Daemon) loadModel() error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	st, err := os.Stat(d.cfg.Model)
	if err != nil {
		return fmt.Errorf("model: %w", err)
	}
	m, err := model.Load(d.cfg.Model)
	if err != nil {
		return err
	}
	c, err := gpu.Select(m, d.cfg.Engine, model.Options{MaxBatch: 8}, d.log)
	if err != nil {
		return err
	}
	// A test inference proves the model runs before it replaces the old one.
	probe := make([]float32, m.InputLen())
	if _, err := c.Classify(context.Background(), probe, 1, 1); err != nil {
		c.Close()
		return fmt.Errorf("model %s: test inference failed: %w", d.cfg.Model, err)
	}
	old := d.clf.Swap(&engineBox{c})
	d.modelMod = st.ModTime()
	d.met.setModel(m.Meta.Version)
	d.met.setEngine(c.Engine())
	d.fallback.Store("")
	if old != nil {
		// In-flight samples holding the old engine finish or get a clear
		// error; the next sample takes the new one.
		defer old.e.Close()
		d.log.Info("model reloaded", "path", d.cfg.Model, "version", m.Meta.Version, "previous", old.e.Model().Meta.Version)
	} else {
		d.log.Info("model loaded", "path", d.cfg.Model, "version", m.Meta.Version, "variant", m.Spec.Variant, "classes", m.Spec.Classes, "engine", c.Engine(), "blas", model.BLASInfo())
		if model.BLASCoreIsGeneric() {
			d.log.Warn("OpenBLAS picked a generic CPU kernel; set OPENBLAS_CORETYPE (e.g. SkylakeX or Haswell) for 3-6x faster inference", "blas", model.BLASInfo())
		}
	}
	return nil
}

// fallBack replaces an engine that reported model.ErrEngineFailed (a CUDA
// context lost to a sticky error) with the CPU engine for the same model,
// so the daemon keeps classifying instead of failing every sample while the
// watchdog is still fed. The next successful reload tries the configured
// engine again. It reports whether the engine now serving differs from
// failed.
func (d *Daemon) fallBack(failed model.Engine, cause error) bool {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	if d.engine() != failed {
		return true // another sample or a reload already replaced it
	}
	m := failed.Model()
	cpu := model.NewClassifier(m, model.Options{MaxBatch: 8})
	d.clf.Store(&engineBox{cpu})
	why := fmt.Sprintf("%s failed at %s (%v); serving on %s until the next model reload or restart",
		failed.Engine(), time.Now().UTC().Format(time.RFC3339), cause, cpu.Engine())
	d.fallback.Store(why)
	d.met.engineFallbacks.Inc()
	d.met.setEngine(cpu.Engine())
	d.log.Error("inference engine failed; falling back to the CPU", "failed", failed.Engine(), "err", cause, "now", cpu.Engine())
	// In-flight calls on the failed engine get its failure; nothing else
	// holds it once the pointer is swapped.
	go failed.Close()
	return true
}

// Reload reloads the model and reports the outcome in log and metrics.
func (d *Daemon) Reload(why string) error {
	err := d.loadModel()
	if err != nil {
		d.met.reloadFail.Inc()
		d.lastError.Store(err.Error())
		d.log.Error("model reload refused; the previous model keeps serving", "trigger", why, "err", err)
		return err
	}
	d.met.reloadOK.Inc()
	return nil
}

// Run runs until ctx ends, then shuts down in order: capture stops,
// in-flight work finishes, the outbox is flushed, "offline" is published.
func (d *Daemon) Run(ctx context.Context) error {
	if d.cfg.Broker == "embedded" {
		b, err := mqtt.StartBroker(d.cfg.Embedded, d.log)
		if err != nil {
			return err
		}
		d.brk = b
		defer b.Close()
	}
	ob, err := mqtt.OpenOutbox(filepath.Join(d.cfg.StateDir, "outbox"), int64(d.cfg.OutboxMB)<<20, d.log)
	if err != nil {
		return err
	}
	var names []string
	for _, c := range d.cams {
		names = append(names, c.cfg.Name)
	}
	pub, err := mqtt.NewPublisher(d.cfg.MQTT, mqtt.Options{Outbox: ob, Logger: d.log, Cameras: names, SWVersion: Version, Commands: d})
	if err != nil {
		return err
	}
	d.pub = pub
	d.met.register(d)

	pubCtx, stopPub := context.WithCancel(context.Background())
	pubDone := make(chan struct{})
	go func() { pub.Run(pubCtx, 5*time.Second); close(pubDone) }()

	srv, err := d.serveHTTP()
	if err != nil {
		stopPub()
		<-pubDone
		return err
	}

	camCtx, stopCams := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, c := range d.cams {
		wg.Add(2)
		go func() { defer wg.Done(); c.src.Run(camCtx) }()
		go func() { defer wg.Done(); c.loop(camCtx) }()
	}
	d.ready.Store(true)
	d.beat.Store(time.Now().UnixNano())
	notify("READY=1")
	go d.watchModelFile(camCtx)
	go d.statsLoop(camCtx)
	go d.watchdog(camCtx)
	if d.cfg.ExitWhenSourcesEnd {
		go d.exitWhenEnded(camCtx, stopCams)
	}

	<-camCtx.Done()
	notify("STOPPING=1")
	d.log.Info("shutting down: stopping capture")
	stopCams()
	wg.Wait() // loops finish their in-flight sample
	for _, c := range d.cams {
		c.src.Close()
		c.close()
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	srv.Shutdown(shutCtx)
	cancel()
	stopPub() // flushes the outbox (up to 5 s) and publishes offline
	<-pubDone
	d.log.Info("stopped", "outbox_left", ob.Len())
	return nil
}

// every calls f at each tick of interval until ctx ends or f returns false.
func every(ctx context.Context, interval time.Duration, f func() bool) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !f() {
			return
		}
	}
}

func (d *Daemon) exitWhenEnded(ctx context.Context, stop context.CancelFunc) {
	every(ctx, 200*time.Millisecond, func() bool {
		ended := true
		for _, c := range d.cams {
			if s := c.src.Status().State; s != vision.StateEnded && s != vision.StateFailed {
				ended = false
			}
		}
		// Give the last sample and the outbox a moment to drain.
		if ended && d.pub.Outbox().Len() == 0 {
			time.Sleep(time.Second)
			d.log.Info("all sources ended; exiting (exit_when_sources_end)")
			stop()
			return false
		}
		return true
	})
}

func (d *Daemon) watchModelFile(ctx context.Context) {
	every(ctx, 5*time.Second, func() bool {
		st, err := os.Stat(d.cfg.Model)
		if err != nil {
			return true
		}
		d.reloadMu.Lock()
		changed := !st.ModTime().Equal(d.modelMod)
		d.reloadMu.Unlock()
		if changed {
			// Wait for the writer to finish before reading.
			time.Sleep(time.Second)
			if d.Reload("file changed") != nil {
				d.reloadMu.Lock()
				d.modelMod = st.ModTime() // do not retry the same bad file every 5 s
				d.reloadMu.Unlock()
			}
		}
		return true
	})
}

func (d *Daemon) statsLoop(ctx context.Context) {
	if d.cfg.Stats <= 0 {
		return
	}
	every(ctx, d.cfg.Stats, func() bool {
		e := d.engine()
		s := mqtt.Stats{Uptime: time.Since(d.start).Seconds(), FPS: map[string]float64{}, CameraState: map[string]string{},
			Model: e.Model().Meta.Version, Engine: e.Engine(), InferenceMS: d.met.lastInferenceMS(),
			QueueDrops: uint64(d.met.dropsTotal())}
		for _, c := range d.cams {
			st := c.src.Status()
			s.FPS[c.cfg.Name] = st.FPS
			s.CameraState[c.cfg.Name] = string(st.State)
		}
		d.pub.Stats(s)
		return true
	})
}

// watchdog pings systemd only while the pipeline is alive: a camera loop
// iterated recently.
func (d *Daemon) watchdog(ctx context.Context) {
	iv := watchdogInterval()
	if iv == 0 {
		return
	}
	every(ctx, iv/2, func() bool {
		if time.Since(time.Unix(0, d.beat.Load())) < iv {
			notify("WATCHDOG=1")
		} else {
			d.log.Error("pipeline stalled; not pinging the watchdog")
		}
		return true
	})
}

// HandleCommand carries out MQTT commands.
func (d *Daemon) HandleCommand(ctx context.Context, c mqtt.Command) (any, error) {
	switch c.Name {
	case mqtt.CmdReload:
		if err := d.Reload("mqtt command"); err != nil {
			return nil, err
		}
		return map[string]string{"model_version": d.engine().Model().Meta.Version}, nil
	case mqtt.CmdClassify, mqtt.CmdSnapshot:
		var out []string
		for _, cam := range d.cams {
			if c.Camera != "" && cam.cfg.Name != c.Camera {
				continue
			}
			done := make(chan error, 1)
			select {
			case cam.trigger <- done:
			default:
				return nil, fmt.Errorf("camera %s is busy", cam.cfg.Name)
			}
			select {
			case err := <-done:
				if err != nil {
					return nil, fmt.Errorf("camera %s: %w", cam.cfg.Name, err)
				}
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if c.Name == mqtt.CmdSnapshot {
				if jpeg := cam.snapshotJPEG(); jpeg != nil {
					d.pub.Thumbnail(cam.cfg.Name, jpeg)
				}
			}
			out = append(out, cam.cfg.Name)
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("no camera named %q", c.Camera)
		}
		return map[string]any{"cameras": out}, nil
	}
	return nil, errors.New("unknown command")
}

// RunFile is leafwatchd's main loop: load the config, start, reload the
// model on SIGHUP, and shut down cleanly on SIGTERM or SIGINT.
func RunFile(cfgPath string, log *slog.Logger) error {
	cfg, err := LoadConfig(cfgPath)
	if err != nil {
		return err
	}
	d, err := New(cfg, log)
	if err != nil {
		return fmt.Errorf("cannot start: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			d.Reload("SIGHUP")
		}
	}()
	return d.Run(ctx)
}
