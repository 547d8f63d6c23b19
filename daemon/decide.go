package daemon

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/leafwatch/leafwatch/model"
)

// Uncertain is the label of a prediction below the confidence threshold.
const Uncertain = "uncertain"

// Event is a decided alert start or end.
type Event struct {
	ID         string
	Phase      string // start | end
	Label      string
	Confidence float32
	Start, End time.Time
}

// Decider turns a camera's stream of predictions into alerts: a disease
// needs K of the last N samples (above threshold) to agree; healthy and
// uncertain samples never alert; an alert ends when the label goes back to
// healthy; one label alerts at most once per cooldown.
type Decider struct {
	cfg    DecisionConfig
	camera string
	device string
	hist   []string // last N decided labels
	active *Event
	last   map[string]time.Time // last alert start per label
}

var eventSeq atomic.Uint64

// NewDecider makes a decider for one camera.
func NewDecider(device, camera string, cfg DecisionConfig) *Decider {
	return &Decider{cfg: cfg, camera: camera, device: device, last: map[string]time.Time{}}
}

// Label applies the confidence threshold (per class where configured).
func (d *Decider) Label(best model.Scored) string {
	th := d.cfg.Threshold
	if t, ok := d.cfg.PerClass[best.Label]; ok {
		th = t
	}
	if best.Prob < th {
		return Uncertain
	}
	return best.Label
}

// Active is the ongoing alert, if any.
func (d *Decider) Active() *Event { return d.active }

// Observe records one sample and returns the events it decides (0, 1 or 2:
// an end and a new start when the disease changes).
func (d *Decider) Observe(label string, conf float32, at time.Time) []Event {
	d.hist = append(d.hist, label)
	if len(d.hist) > d.cfg.N {
		d.hist = d.hist[len(d.hist)-d.cfg.N:]
	}
	var out []Event
	if d.active != nil {
		healthyRun := 0
		for _, l := range d.hist {
			if model.IsHealthy(l) {
				healthyRun++
			}
		}
		// Back to healthy: the same K-of-N evidence ends an alert.
		if model.IsHealthy(label) && healthyRun >= d.cfg.K {
			e := *d.active
			e.Phase, e.End = "end", at
			out = append(out, e)
			d.active = nil
		}
	}
	if label == Uncertain || model.IsHealthy(label) {
		return out
	}
	agree := 0
	for _, l := range d.hist {
		if l == label {
			agree++
		}
	}
	if agree < d.cfg.K || (d.active != nil && d.active.Label == label) {
		return out
	}
	if t, ok := d.last[label]; ok && at.Sub(t) < d.cfg.Cooldown {
		return out
	}
	if d.active != nil {
		e := *d.active
		e.Phase, e.End = "end", at
		out = append(out, e)
	}
	d.last[label] = at
	d.active = &Event{ID: fmt.Sprintf("%s-%s-%s-%04d", d.device, d.camera, at.UTC().Format("20060102T150405Z"), eventSeq.Add(1)%10000),
		Phase: "start", Label: label, Confidence: conf, Start: at}
	return append(out, *d.active)
}
