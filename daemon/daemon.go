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

	"github.com/leafwatch/leafwatch/daemon/fleet"
	"github.com/leafwatch/leafwatch/daemon/samples"
	"github.com/leafwatch/leafwatch/internal/buildinfo"
	"github.com/leafwatch/leafwatch/model/gpu"
	"github.com/leafwatch/leafwatch/mqtt"
	"github.com/leafwatch/leafwatch/vision"
)

// Version is the release this binary was built as (internal/buildinfo).
var Version = buildinfo.String()

// Daemon is a running leafwatchd.
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	serving atomic.Pointer[engineBox] // the engine serving now (CPU or CUDA), counted while in use
	pub     *mqtt.Publisher
	brk     *mqtt.Broker
	snaps   *vision.SnapshotDir
	cams    []*camRunner
	met     *metrics
	start   time.Time // also the origin of mono()
	auth    *httpAuth
	certs   *certStore // nil: plain HTTP

	reloads   reloadState
	ready     atomic.Bool
	lastError atomic.Value // string: the last reload error, until a reload succeeds
	fallback  atomic.Value // string: why the configured engine was replaced by the CPU
	restored  []restoredEvent
	batch     *batcher // merges cameras' engine calls; nil with one camera or before Run

	store      *samples.Store  // kept samples; nil when the store cannot be opened
	keeper     *samples.Keeper // nil with store
	samplesErr string          // why store is nil
	sumCache   summaryCache
	csrf       string // the labelling page's token for state-changing requests

	updater *fleet.Updater // takes models announced to the fleet group
}

// restoredEvent is an end decided while restoring a camera's state, to
// publish once the publisher runs.
type restoredEvent struct {
	cam *camRunner
	e   Event
}

// mono is the time since start on the monotonic clock: liveness and rate
// limits must not jump with the wall clock (an NTP step on a board that
// booted with a wrong time).
func (d *Daemon) mono() int64 { return int64(time.Since(d.start)) }

// resumeWithin is how long the daemon may be down and still continue an
// ongoing alert: longer, and it ends the alert explicitly (reason "stale").
func resumeWithin(cam CameraConfig) time.Duration { return max(30*time.Minute, 20*cam.Interval) }

// New loads the model and prepares every part; Run starts them. On an
// error nothing it opened is left behind.
func New(cfg Config, log *slog.Logger) (_ *Daemon, err error) {
	d := &Daemon{cfg: cfg, log: log, start: time.Now(), met: newMetrics(), csrf: newCSRFToken()}
	gpu.SetLibraryDirs(cfg.CUDALibs)
	defer func() {
		if err != nil {
			d.closeParts()
		}
	}()
	if d.auth, err = loadHTTPAuth(cfg.HTTPAuth); err != nil {
		return nil, err
	}
	if d.certs, err = loadCertStore(cfg.HTTPTLS); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o750); err != nil {
		return nil, fmt.Errorf("state_dir: %w", err)
	}
	if err := d.loadModel(); err != nil {
		return nil, err
	}
	d.openSamples()
	if err := d.openUpdater(); err != nil {
		return nil, err
	}
	if d.snaps, err = vision.OpenSnapshotDir(filepath.Join(cfg.StateDir, "snapshots"), int64(cfg.Snapshots.MaxMB)<<20); err != nil {
		return nil, err
	}
	for _, cc := range cfg.Cameras {
		src, err := vision.Open(cc.Source, log.With("camera", cc.Name))
		if err != nil {
			return nil, fmt.Errorf("camera %s: %w", cc.Name, err)
		}
		store, err := openDecisionStore(cfg.StateDir, cc.Name)
		if err != nil {
			src.Close()
			return nil, err
		}
		c := &camRunner{d: d, cfg: cc, src: src, store: store, dec: NewDecider(cfg.Device, cc.Name, cc.Decision), trigger: make(chan sampleRequest, 1)}
		d.cams = append(d.cams, c)
		if err := d.restore(c); err != nil {
			log.Error("decision state not restored; starting fresh", "camera", cc.Name, "err", err)
		}
	}
	return d, nil
}

// restore continues a camera's decisions from before a restart.
func (d *Daemon) restore(c *camRunner) error {
	st, ok, err := c.store.load()
	if err != nil || !ok {
		return err
	}
	now := time.Now()
	ends := c.dec.Restore(st, now, resumeWithin(c.cfg))
	if a := c.dec.Active(); a != nil {
		d.log.Info("continuing the alert that was ongoing before the restart", "camera", c.cfg.Name, "event", a.ID, "label", a.Label, "down_for", now.Sub(st.SavedAt).Round(time.Second))
		cp := *a
		c.active = &cp
	}
	for _, e := range ends {
		d.log.Info("ending the alert that was ongoing before the restart: the daemon was down too long to continue it",
			"camera", c.cfg.Name, "event", e.ID, "down_for", now.Sub(st.SavedAt).Round(time.Second))
		d.restored = append(d.restored, restoredEvent{c, e})
	}
	if len(ends) > 0 {
		return c.store.save(c.dec.State(now))
	}
	return nil
}

// closeParts releases what New opened (cameras not yet running, the
// engine) when New fails.
func (d *Daemon) closeParts() {
	for _, c := range d.cams {
		c.src.Close()
	}
	if b := d.serving.Load(); b != nil {
		b.e.Close()
	}
	if d.keeper != nil {
		d.keeper.Close()
	}
	if d.store != nil {
		d.store.Close()
	}
}

// emit queues an alert and records it for the status page and metrics.
func (d *Daemon) emit(c *camRunner, a mqtt.Alert) {
	if err := d.pub.Alert(a); err != nil {
		d.log.Error("ALERT DROPPED", "camera", c.cfg.Name, "event", a.EventID, "phase", a.Phase, "err", err)
		return
	}
	d.met.alerts.WithLabelValues(c.cfg.Name, a.Phase).Inc()
	d.log.Info("alert", "camera", c.cfg.Name, "phase", a.Phase, "label", a.Label, "event", a.EventID, "reason", a.Reason)
	c.mu.Lock()
	c.alerts = append(c.alerts, a)
	if len(c.alerts) > 20 {
		c.alerts = c.alerts[len(c.alerts)-20:]
	}
	c.mu.Unlock()
}

// sendThumbnail publishes a snapshot as the camera's thumbnail, made
// smaller until it fits thumbnail_max_bytes.
func (d *Daemon) sendThumbnail(camera string, jpeg []byte) error {
	limit := d.pub.ThumbnailLimit()
	if limit <= 0 {
		return nil
	}
	fit, err := vision.FitJPEG(jpeg, limit)
	if err != nil {
		return err
	}
	return d.pub.Thumbnail(camera, fit)
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
	pub, err := mqtt.NewPublisher(d.cfg.MQTT, mqtt.Options{Outbox: ob, Logger: d.log, Cameras: names, SWVersion: Version, Commands: d,
		Subscriptions: []mqtt.Subscription{d.fleetSubscription()}})
	if err != nil {
		return err
	}
	d.pub = pub
	d.met.register(d)
	d.publishModelInfo(false)
	for _, r := range d.restored {
		d.emit(r.cam, alertPayload(r.cam.cfg.Name, r.e, d.engine().Model().Meta.Version, ""))
	}
	d.restored = nil

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
	waitWork := d.startWork(ctx, camCtx, stopCams)

	<-camCtx.Done()
	notify("STOPPING=1")
	d.log.Info("shutting down: stopping capture")
	stopCams()
	waitWork() // loops finish their in-flight sample; an update in progress stops (a download resumes at the next start)
	// Cameras close at once, not one after another: each may wait up to 3 s
	// for a read that hangs in OpenCV.
	var closing sync.WaitGroup
	for _, c := range d.cams {
		closing.Add(1)
		go func() { defer closing.Done(); c.src.Close(); c.close() }()
	}
	closing.Wait()
	if d.keeper != nil {
		d.keeper.Close() // writes the frames it holds (bounded), then stops
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	srv.Shutdown(shutCtx)
	cancel()
	stopPub() // flushes the outbox (up to 5 s) and publishes offline
	<-pubDone
	d.engine().Close()
	if d.store != nil {
		d.store.Close()
	}
	d.log.Info("stopped", "outbox_left", ob.Len())
	return nil
}

// startWork starts the samples keeper, the cameras' capture and sample
// loops and the background loops (model file watcher, updater, stats,
// samples, watchdog) under camCtx (the keeper under ctx: it outlives the
// cameras to write what it holds); the returned func waits for the camera
// loops and the updater to finish once camCtx ends.
func (d *Daemon) startWork(ctx, camCtx context.Context, stopCams context.CancelFunc) (wait func()) {
	if d.keeper != nil {
		if err := d.keeper.Start(ctx); err != nil {
			d.log.Error("samples: keeping is off: the store could not be prepared (classification and alerts go on)", "err", err)
			d.keeper.Close()
			d.keeper = nil
		}
	}
	var wg sync.WaitGroup
	if len(d.cams) > 1 {
		d.batch = newBatcher()
		wg.Add(1)
		go func() { defer wg.Done(); d.batch.run(camCtx) }()
	}
	for _, c := range d.cams {
		wg.Add(2)
		go func() { defer wg.Done(); c.src.Run(camCtx) }()
		go func() { defer wg.Done(); c.loop(camCtx) }()
	}
	d.ready.Store(true)
	notify("READY=1")
	go d.watchModelFile(camCtx)
	updDone := make(chan struct{})
	go func() { d.updater.Run(camCtx); close(updDone) }()
	go d.statsLoop(camCtx)
	go d.samplesLoop(camCtx)
	go d.watchdog(camCtx)
	if d.cfg.ExitWhenSourcesEnd {
		go d.exitWhenEnded(camCtx, stopCams)
	}
	return func() { wg.Wait(); <-updDone }
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
		if ended && d.pub.Outbox().Len() == 0 && d.pub.Pending() == 0 {
			time.Sleep(time.Second)
			d.log.Info("all sources ended; exiting (exit_when_sources_end)")
			stop()
			return false
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

// alive reports whether every camera loop showed life within limit: a
// loop waiting for its next sample beats every second, one stuck inside a
// sample (a hung inference) does not.
func (d *Daemon) alive(limit time.Duration) (bool, string) {
	now := d.mono()
	for _, c := range d.cams {
		if since := time.Duration(now - c.beat.Load()); since > limit {
			return false, fmt.Sprintf("camera %s's loop silent for %v", c.cfg.Name, since.Round(time.Second))
		}
	}
	return true, ""
}

// watchdog pings systemd while the pipeline is alive.
func (d *Daemon) watchdog(ctx context.Context) {
	iv := watchdogInterval()
	if iv == 0 {
		return
	}
	every(ctx, iv/3, func() bool {
		if ok, why := d.alive(iv / 2); ok {
			notify("WATCHDOG=1")
		} else {
			d.log.Error("pipeline stalled; not pinging the watchdog", "why", why)
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
	case mqtt.CmdInstall:
		v, err := d.updater.Install()
		if err != nil {
			return nil, err
		}
		return map[string]string{"installing": v, "follow": d.pub.Topics().Update()}, nil
	case mqtt.CmdRollback:
		if err := d.updater.Rollback(ctx, "rollback command"); err != nil {
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
			case cam.trigger <- sampleRequest{force: true, done: done}:
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
				if err := d.sendThumbnail(cam.cfg.Name, cam.snapshotJPEG()); err != nil {
					return nil, fmt.Errorf("camera %s: snapshot not published: %w", cam.cfg.Name, err)
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
			d.reloadTLS()
			d.Reload("SIGHUP")
		}
	}()
	return d.Run(ctx)
}
