package daemon

import (
	"context"
	"errors"
	"fmt"
	"image"
	"sync"
	"sync/atomic"
	"time"

	"gocv.io/x/gocv"

	"github.com/leafwatch/leafwatch/daemon/samples"
	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/mqtt"
	"github.com/leafwatch/leafwatch/vision"
)

// camRunner samples one camera at its interval and runs the pipeline:
// frame → infer → decide → record → publish.
type camRunner struct {
	d       *Daemon
	cfg     CameraConfig
	src     *vision.Camera
	dec     *Decider
	store   *decisionStore
	trigger chan sampleRequest

	frame   gocv.Mat
	pp      *vision.Preprocessor
	ppKey   vision.Preprocess // what pp was built for (not the model: that would keep it alive)
	lastSeq uint64
	beat    atomic.Int64     // monotonic time of the loop's last sign of life (Daemon.mono)
	regions []samples.Region // reused for the keeper's offers
	said    map[string]bool  // fallback reasons already logged

	mu       sync.Mutex
	state    mqtt.Classification
	active   *Event // the ongoing alert, for the status page
	lastJPEG []byte
	alerts   []mqtt.Alert // recent, newest last
}

// sampleRequest is a command's sample: force classifies the newest frame
// even if the scheduled sample already used it.
type sampleRequest struct {
	force bool
	done  chan error
}

func (c *camRunner) close() {
	if c.pp != nil {
		c.pp.Close()
	}
	c.frame.Close()
}

// loop samples at the camera's interval and on commands. It shows it is
// alive every second while it waits, so the watchdog reflects a wedged
// pipeline, not a long interval.
func (c *camRunner) loop(ctx context.Context) {
	c.frame = gocv.NewMat()
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	alive := time.NewTicker(livenessPeriod())
	defer alive.Stop()
	for {
		c.beat.Store(c.d.mono())
		var req *sampleRequest
		select {
		case <-ctx.Done():
			return
		case <-alive.C:
			continue
		case <-t.C:
		case r := <-c.trigger:
			req = &r
		}
		err := c.sample(ctx, req != nil && req.force)
		if req != nil {
			req.done <- err
		}
		if err != nil && !errors.Is(err, errNoNewFrame) {
			c.d.log.Warn("sample failed", "camera", c.cfg.Name, "err", err)
		}
	}
}

var (
	errNoNewFrame = errors.New("no new frame since the last sample")
	errNoFrame    = errors.New("no frame from the camera yet")
)

// sample runs one pass of the pipeline.
func (c *camRunner) sample(ctx context.Context, force bool) error {
	at, err := c.grab(force)
	if err != nil {
		return err
	}
	if k := c.d.keeper; k != nil {
		// The keeper's writer waits for the gaps between samples.
		k.Busy(+1)
		defer k.Busy(-1)
	}
	inf, err := c.infer(ctx)
	if err != nil {
		return err
	}
	d := c.decide(inf, at)
	jpeg, err := c.record(inf, d, at)
	if err == nil {
		c.publish(inf.m, d, jpeg, at)
		c.keep(inf, d, at)
	}
	// Nothing here may still point at the model when the engine is
	// released: the release may free a replaced model's weights (GC).
	box := inf.engine
	inf = inference{}
	box.release()
	return err
}

// grab copies the newest frame; without force, one already sampled is a
// drop (the camera delivers no new frames).
func (c *camRunner) grab(force bool) (time.Time, error) {
	seq, at := c.src.Latest(&c.frame)
	if seq == 0 {
		c.d.met.drops.WithLabelValues(c.cfg.Name, "no_frame").Inc()
		return at, errNoFrame
	}
	if seq == c.lastSeq && !force {
		c.d.met.drops.WithLabelValues(c.cfg.Name, "no_new_frame").Inc()
		return at, errNoNewFrame
	}
	c.lastSeq = seq
	return at, nil
}

// inference is what the model said about a frame's regions.
type inference struct {
	m      *model.Model
	boxes  []image.Rectangle
	kinds  []string // frame, tile or leaf, per box (owned by the camera's preprocessor)
	preds  []model.Prediction
	engine *engineBox // counted in use until the sample releases it
}

// infer preprocesses the frame (and its tiles) and classifies them as one
// batch, falling back to the CPU if the engine reports it has failed.
// The engine stays counted in use until the sample ends (sample releases it):
// decide, record and publish still read the model it served.
func (c *camRunner) infer(ctx context.Context) (inf inference, err error) {
	box := c.d.acquireEngine()
	defer func() {
		if err != nil {
			box.release()
		}
	}()
	clf := box.e
	m := clf.Model()
	key := vision.Preprocess{InputSize: m.Meta.InputSize, Resize: m.Meta.Resize, Mean: m.Meta.Mean, Std: m.Meta.Std}
	if c.pp == nil || c.ppKey != key {
		if c.pp != nil {
			c.pp.Close()
			c.pp = nil
		}
		pp, err := vision.NewRegionPreprocessor(key, c.cfg.RegionConfig())
		if err != nil {
			return inference{}, err
		}
		c.pp, c.ppKey = pp, key
	}
	batch, boxes, err := c.pp.Run(c.frame)
	if err != nil {
		return inference{}, err
	}
	c.noteFallback(c.pp.Fallback())
	t0 := time.Now()
	preds, err := c.d.classify(ctx, clf, batch, len(boxes))
	if errors.Is(err, model.ErrEngineFailed) && c.d.fallBack(clf, err) {
		box.release()
		box = c.d.acquireEngine()
		clf = box.e
		preds, err = c.d.classify(ctx, clf, batch, len(boxes))
	}
	if err != nil {
		return inference{}, fmt.Errorf("classify: %w", err)
	}
	c.d.met.observeInference(time.Since(t0))
	c.d.met.samples.WithLabelValues(c.cfg.Name).Inc()
	return inference{m: clf.Model(), boxes: boxes, kinds: c.pp.Kinds(), preds: preds, engine: box}, nil
}

// decision is the camera's answer for one sample and the events it caused.
type decision struct {
	cls    mqtt.Classification
	marks  []vision.TileMark
	events []Event
	best   int // the region that answered
}

// decide picks the answering region, applies the thresholds and feeds the
// decider.
func (c *camRunner) decide(inf inference, at time.Time) decision {
	best := c.dec.Choose(inf.preds)
	top := inf.preds[best].Best()
	label := c.dec.Label(top)
	c.d.met.decisions.WithLabelValues(c.cfg.Name, label).Inc()
	events := c.dec.Observe(label, top.Prob, at)
	cls, marks := classification(c.cfg.Name, c.dec, inf, best, at)
	cls.Disease = c.dec.Active() != nil
	return decision{cls: cls, marks: marks, events: events, best: best}
}

// record draws the snapshot and updates what the status page shows.
func (c *camRunner) record(inf inference, d decision, at time.Time) ([]byte, error) {
	jpeg, err := vision.EncodeSnapshot(c.frame, vision.Overlay{Camera: c.cfg.Name, Label: d.cls.Label, Confidence: d.cls.Confidence,
		Alert: d.cls.Disease, Time: at, Tiles: d.marks}, c.d.cfg.Snapshots.Width, c.d.cfg.Snapshots.Quality)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.active = nil
	if a := c.dec.Active(); a != nil {
		cp := *a
		c.active = &cp
	}
	c.lastJPEG = jpeg
	return jpeg, nil
}

// publish sends the state and the alerts, persisting the decision state
// first whenever an alert started or ended.
func (c *camRunner) publish(m *model.Model, d decision, jpeg []byte, at time.Time) {
	c.mu.Lock()
	changed := c.state.Label != d.cls.Label || c.state.Disease != d.cls.Disease
	c.state = d.cls
	c.mu.Unlock()
	if len(d.events) > 0 {
		if err := c.store.save(c.dec.State(time.Now())); err != nil {
			c.d.log.Error("decision state not saved: a restart now would not continue this alert", "camera", c.cfg.Name, "err", err)
		}
	}
	if err := c.d.pub.State(d.cls, changed); err != nil {
		c.d.log.Error("state message dropped", "camera", c.cfg.Name, "err", err)
	}
	for _, e := range d.events {
		snapshot := ""
		if e.Phase == mqtt.AlertStart {
			name := fmt.Sprintf("%s-%s.jpg", c.cfg.Name, e.Start.UTC().Format("20060102T150405.000Z"))
			if p, err := c.d.snaps.Save(name, jpeg); err == nil {
				snapshot = p
			} else {
				c.d.log.Warn("snapshot not saved", "camera", c.cfg.Name, "err", err)
			}
			if err := c.d.sendThumbnail(c.cfg.Name, jpeg); err != nil {
				c.d.log.Warn("alert thumbnail not published", "camera", c.cfg.Name, "err", err)
			}
		}
		c.d.emit(c, alertPayload(c.cfg.Name, e, m.Meta.Version, snapshot))
	}
}

// noteFallback counts a frame whose leaves could not be used and says so
// in the log the first time for each reason.
func (c *camRunner) noteFallback(why string) {
	if why == "" {
		return
	}
	c.d.met.regionFallbacks.WithLabelValues(c.cfg.Name, why).Inc()
	if c.said == nil {
		c.said = map[string]bool{}
	}
	if !c.said[why] {
		c.said[why] = true
		what := "the tiling"
		if !c.cfg.Tiling.Enabled() {
			what = "the whole frame"
		}
		c.d.log.Info("no leaves found in a frame; classifying "+what+" instead (said once per reason; leafwatch_region_fallbacks_total counts them)",
			"camera", c.cfg.Name, "reason", why)
	}
}

func (c *camRunner) snapshotJPEG() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastJPEG
}

// classify runs one camera's batch, merged with other cameras' when they
// sample at the same time.
func (d *Daemon) classify(ctx context.Context, e model.Engine, x []float32, n int) ([]model.Prediction, error) {
	if d.batch != nil {
		return d.batch.classify(ctx, e, x, n, d.cfg.TopK)
	}
	return e.Classify(ctx, x, n, d.cfg.TopK)
}
