package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"gocv.io/x/gocv"

	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/mqtt"
	"github.com/leafwatch/leafwatch/vision"
)

// camRunner samples one camera at its interval and runs the pipeline.
type camRunner struct {
	d       *Daemon
	cfg     CameraConfig
	src     *vision.Camera
	dec     *Decider
	trigger chan chan error

	frame   gocv.Mat
	pp      *vision.Preprocessor
	ppFor   *model.Model
	lastSeq uint64

	mu       sync.Mutex
	state    mqtt.Classification
	active   *Event // the ongoing alert, for the status page
	lastJPEG []byte
	alerts   []mqtt.Alert // recent, newest last
}

func (c *camRunner) close() {
	if c.pp != nil {
		c.pp.Close()
	}
	c.frame.Close()
}

func (c *camRunner) loop(ctx context.Context) {
	c.frame = gocv.NewMat()
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		var reply chan error
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case reply = <-c.trigger:
		}
		c.d.beat.Store(time.Now().UnixNano())
		err := c.sample(ctx)
		if reply != nil {
			reply <- err
		}
		if err != nil && !errors.Is(err, errNoNewFrame) {
			c.d.log.Warn("sample failed", "camera", c.cfg.Name, "err", err)
		}
	}
}

var errNoNewFrame = errors.New("no new frame since the last sample")

func (c *camRunner) sample(ctx context.Context) error {
	seq, at := c.src.Latest(&c.frame)
	if seq == 0 || seq == c.lastSeq {
		c.d.met.drops.WithLabelValues(c.cfg.Name, "no_new_frame").Inc()
		return errNoNewFrame
	}
	c.lastSeq = seq
	clf := c.d.engine()
	m := clf.Model()
	if c.pp == nil || c.ppFor != m {
		if c.pp != nil {
			c.pp.Close()
		}
		md := m.Meta
		pp, err := vision.NewPreprocessor(vision.Preprocess{InputSize: md.InputSize, Resize: md.Resize, Mean: md.Mean, Std: md.Std}, c.cfg.Tiling)
		if err != nil {
			return err
		}
		c.pp, c.ppFor = pp, m
	}
	batch, boxes, err := c.pp.Run(c.frame)
	if err != nil {
		return err
	}
	t0 := time.Now()
	preds, err := clf.Classify(ctx, batch, len(boxes), c.d.cfg.TopK)
	if errors.Is(err, model.ErrEngineFailed) && c.d.fallBack(clf, err) {
		clf = c.d.engine()
		preds, err = clf.Classify(ctx, batch, len(boxes), c.d.cfg.TopK)
	}
	if err != nil {
		return fmt.Errorf("classify: %w", err)
	}
	c.d.met.observeInference(time.Since(t0))
	c.d.met.samples.WithLabelValues(c.cfg.Name).Inc()

	// The camera's answer: the most confident disease seen in any region
	// above its threshold, else the most confident region overall.
	bi := 0
	for i, p := range preds {
		b := p.Best()
		cur := preds[bi].Best()
		lab, curLab := c.dec.Label(b), c.dec.Label(cur)
		disease := lab != Uncertain && !model.IsHealthy(lab)
		curDisease := curLab != Uncertain && !model.IsHealthy(curLab)
		if (disease && !curDisease) || (disease == curDisease && b.Prob > cur.Prob) {
			bi = i
		}
	}
	best := preds[bi].Best()
	label := c.dec.Label(best)
	c.d.met.decisions.WithLabelValues(c.cfg.Name, label).Inc()
	events := c.dec.Observe(label, best.Prob, at)

	cls := mqtt.Classification{Camera: c.cfg.Name, Label: label, Display: displayOf(label), Confidence: best.Prob,
		Disease: c.dec.Active() != nil, Model: m.Meta.Version, FrameTime: at.UTC()}
	for _, s := range preds[bi].Top {
		cls.Top = append(cls.Top, mqtt.Scored{Label: s.Label, Prob: s.Prob})
	}
	var marks []vision.TileMark
	if len(boxes) > 1 {
		for i, b := range boxes {
			pb := preds[i].Best()
			l := c.dec.Label(pb)
			cls.Tiles = append(cls.Tiles, mqtt.TileResult{Box: [4]int{b.Min.X, b.Min.Y, b.Dx(), b.Dy()}, Label: l, Confidence: pb.Prob})
			marks = append(marks, vision.TileMark{Box: b, Label: l, Confidence: pb.Prob, Alert: l != Uncertain && !model.IsHealthy(l)})
		}
	}
	jpeg, err := vision.EncodeSnapshot(c.frame, vision.Overlay{Camera: c.cfg.Name, Label: label, Confidence: best.Prob,
		Alert: cls.Disease, Time: at, Tiles: marks}, c.d.cfg.Snapshots.Width, c.d.cfg.Snapshots.Quality)
	if err != nil {
		return err
	}
	c.mu.Lock()
	changed := c.state.Label != cls.Label || c.state.Disease != cls.Disease
	c.state = cls
	c.active = nil
	if a := c.dec.Active(); a != nil {
		cp := *a
		c.active = &cp
	}
	c.lastJPEG = jpeg
	c.mu.Unlock()
	if err := c.d.pub.State(cls, changed); err != nil {
		c.d.log.Error("state not queued", "camera", c.cfg.Name, "err", err)
	}
	for _, e := range events {
		a := mqtt.Alert{EventID: e.ID, Phase: e.Phase, Camera: c.cfg.Name, Label: e.Label, Display: displayOf(e.Label),
			Confidence: e.Confidence, Start: e.Start.UTC(), Model: m.Meta.Version}
		if e.Phase == mqtt.AlertEnd {
			a.End = e.End.UTC()
		} else {
			name := fmt.Sprintf("%s-%s.jpg", c.cfg.Name, e.Start.UTC().Format("20060102T150405.000Z"))
			if p, err := c.d.snaps.Save(name, jpeg); err == nil {
				a.Snapshot = p
			} else {
				c.d.log.Warn("snapshot not saved", "err", err)
			}
			c.d.pub.Thumbnail(c.cfg.Name, jpeg)
		}
		// The alert is on disk before we go on: nothing decided is lost.
		if err := c.d.pub.Alert(a); err != nil {
			c.d.log.Error("ALERT NOT QUEUED", "camera", c.cfg.Name, "event", e.ID, "err", err)
			continue
		}
		c.d.met.alerts.WithLabelValues(c.cfg.Name, e.Phase).Inc()
		c.d.log.Info("alert", "camera", c.cfg.Name, "phase", e.Phase, "label", e.Label, "event", e.ID)
		c.mu.Lock()
		c.alerts = append(c.alerts, a)
		if len(c.alerts) > 20 {
			c.alerts = c.alerts[len(c.alerts)-20:]
		}
		c.mu.Unlock()
	}
	return nil
}

func displayOf(label string) string {
	if label == Uncertain {
		return "Not sure"
	}
	return model.DisplayLabel(label)
}

func (c *camRunner) snapshotJPEG() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastJPEG
}
