package daemon

import (
	"context"
	"fmt"
	"image"
	"os"
	"path/filepath"
	"slices"

	"gocv.io/x/gocv"

	"github.com/leafwatch/leafwatch/daemon/fleet"
	"github.com/leafwatch/leafwatch/daemon/samples"
	"github.com/leafwatch/leafwatch/internal/bundle"
	"github.com/leafwatch/leafwatch/internal/fieldset"
	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/mqtt"
	"github.com/leafwatch/leafwatch/vision"
)

// fleetHost is the daemon as daemon/fleet sees it: the serving model,
// candidates built like reloads build them, the labelled samples, and the
// update state published over MQTT.
type fleetHost struct{ d *Daemon }

// openUpdater prepares model updates from the fleet group's announcements.
func (d *Daemon) openUpdater() error {
	u, err := fleet.New(fleet.Options{Config: d.cfg.Models, Group: d.cfg.Fleet.Group, Dir: filepath.Join(d.cfg.StateDir, "fleet"),
		ModelPath: d.cfg.Model, Host: fleetHost{d}, Log: d.log})
	if err != nil {
		return fmt.Errorf("models: %w", err)
	}
	d.updater = u
	return nil
}

// fleetSubscription hands the group's announcements to the updater.
func (d *Daemon) fleetSubscription() mqtt.Subscription {
	return mqtt.Subscription{Filter: mqtt.FleetModel(d.cfg.MQTT.Prefix, d.cfg.Fleet.Group),
		Handler: func(_ string, payload []byte, _ bool) { d.updater.Offer(payload) }}
}

func (h fleetHost) Serving() fleet.Model { return engineModel{d: h.d} }

func (h fleetHost) Load(ctx context.Context, path string, m bundle.Manifest) (fleet.Candidate, error) {
	e, err := h.d.prepareEngine(path, m)
	if err != nil {
		return nil, err
	}
	return &candidate{engineModel{d: h.d, e: e}}, nil
}

// Install serves the candidate. It runs as a reload does (one at a time),
// and notes the file's new modification time so the watcher does not load
// it again.
func (h fleetHost) Install(c fleet.Candidate) error {
	d := h.d
	e := c.(*candidate).e
	d.reloads.gate.Lock()
	defer d.reloads.gate.Unlock()
	st, err := os.Stat(d.cfg.Model)
	if err != nil {
		return err
	}
	d.swapIn(e, st.ModTime())
	d.lastError.Store("")
	return nil
}

func (h fleetHost) Examples(ctx context.Context) ([]fleet.Example, error) {
	st := h.d.store
	if st == nil {
		return nil, nil // no store: no labelled samples (the rule says so)
	}
	list, err := st.List(ctx, samples.Filter{Labelled: true})
	if err != nil {
		return nil, err
	}
	var out []fleet.Example
	for _, x := range list {
		if x.Label == fieldset.Unsure {
			continue
		}
		file := x.File
		out = append(out, fleet.Example{ID: x.ID, Label: x.Label, Baseline: slices.Contains(x.Rules, fieldset.RuleBaseline),
			Read: func() ([]byte, error) { return st.ReadImage(file) }})
	}
	return out, nil
}

func (h fleetHost) Publish(s fleet.State, durable bool) {
	if h.d.pub == nil {
		return
	}
	if err := h.d.pub.Update(s.Marshal(), durable); err != nil {
		h.d.log.Error("model update state not queued", "err", err)
	}
	h.d.met.setUpdate(s)
}

// engineModel is an engine as a fleet.Model: e, or the serving engine when
// e is nil.
type engineModel struct {
	d *Daemon
	e model.Engine
}

func (m engineModel) model() *model.Model {
	if m.e != nil {
		return m.e.Model()
	}
	return m.d.engine().Model()
}

func (m engineModel) Version() string  { return m.model().Meta.Version }
func (m engineModel) SHA256() string   { return m.model().Meta.SHA256 }
func (m engineModel) Labels() []string { return m.model().Meta.Labels }

// Predict classifies each example's region JPEG whole, prepared as the
// model's metadata says (as finetune eval does on an exported sample), in
// batches of 8.
func (m engineModel) Predict(ctx context.Context, ex []fleet.Example) ([]string, error) {
	e := m.e
	if e == nil {
		b := m.d.acquireEngine()
		defer b.release()
		e = b.e
	}
	meta := e.Model().Meta
	p := vision.Preprocess{InputSize: meta.InputSize, Resize: meta.Resize, Mean: meta.Mean, Std: meta.Std}
	scratch := vision.NewScratch()
	defer scratch.Close()
	const batch = 8
	il := 3 * meta.InputSize * meta.InputSize
	x := make([]float32, batch*il)
	out := make([]string, 0, len(ex))
	for s := 0; s < len(ex); s += batch {
		n := min(batch, len(ex)-s)
		for i := range n {
			if err := prepareJPEG(ex[s+i], p, x[i*il:(i+1)*il], scratch); err != nil {
				return nil, err
			}
		}
		preds, err := e.Classify(ctx, x[:n*il], n, 1)
		if err != nil {
			return nil, err
		}
		for _, pr := range preds {
			out = append(out, pr.Top[0].Label)
		}
	}
	return out, nil
}

func prepareJPEG(e fleet.Example, p vision.Preprocess, dst []float32, s *vision.Scratch) error {
	b, err := e.Read()
	if err != nil {
		return fmt.Errorf("sample %s: %w", e.ID, err)
	}
	img, err := gocv.IMDecode(b, gocv.IMReadColor)
	if err != nil || img.Empty() {
		img.Close()
		return fmt.Errorf("sample %s: the image does not decode", e.ID)
	}
	defer img.Close()
	return vision.Prepare(img, image.Rect(0, 0, img.Cols(), img.Rows()), p, vision.Centre, dst, s)
}

// candidate is a prepared engine not yet serving.
type candidate struct{ engineModel }

func (c *candidate) Close() { c.e.Close() }
