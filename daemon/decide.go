package daemon

import (
	"fmt"
	"time"

	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/mqtt"
)

// Uncertain is the label of a prediction below the confidence threshold.
const Uncertain = "uncertain"

// Why an alert ended (the end event's reason).
const (
	EndHealthy  = "healthy"  // k of the last n samples were healthy again
	EndReplaced = "replaced" // another disease took over
	EndStale    = "stale"    // the daemon was down too long to continue it
)

// Event is a decided alert start or end.
type Event struct {
	ID         string    `json:"id"`
	Phase      string    `json:"phase"` // mqtt.AlertStart | mqtt.AlertEnd
	Label      string    `json:"label"`
	Confidence float32   `json:"confidence"`
	Start      time.Time `json:"start"`
	End        time.Time `json:"end,omitzero"`
	Reason     string    `json:"reason,omitempty"` // end events
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
	seq    uint64               // event counter, part of event ids
}

// NewDecider makes a decider for one camera.
func NewDecider(device, camera string, cfg DecisionConfig) *Decider {
	return &Decider{cfg: cfg, camera: camera, device: device, last: map[string]time.Time{}}
}

// Threshold is the confidence a label needs (per class where configured).
func (d *Decider) Threshold(label string) float32 {
	if t, ok := d.cfg.PerClass[label]; ok {
		return t
	}
	return d.cfg.Threshold
}

// Label applies the confidence threshold (per class where configured).
func (d *Decider) Label(best model.Scored) string {
	if best.Prob < d.Threshold(best.Label) {
		return Uncertain
	}
	return best.Label
}

// IsDisease reports whether a decided label is a disease (not healthy,
// not uncertain, not "not a leaf").
func IsDisease(label string) bool {
	return label != Uncertain && !model.IsHealthy(label) && !model.IsNotALeaf(label)
}

// Choose picks the region that answers for the camera: the most confident
// disease above its threshold in any region, else the most confident
// region overall.
func (d *Decider) Choose(preds []model.Prediction) int {
	bi := 0
	for i, p := range preds {
		b, cur := p.Best(), preds[bi].Best()
		dis, curDis := IsDisease(d.Label(b)), IsDisease(d.Label(cur))
		if (dis && !curDis) || (dis == curDis && b.Prob > cur.Prob) {
			bi = i
		}
	}
	return bi
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
			out = append(out, d.end(at, EndHealthy))
		}
	}
	if !IsDisease(label) {
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
	if t, ok := d.last[label]; ok && at.Sub(t) < d.cfg.Cooldown && at.Sub(t) >= 0 {
		return out
	}
	if d.active != nil {
		out = append(out, d.end(at, EndReplaced))
	}
	d.last[label] = at
	d.seq++
	d.active = &Event{ID: fmt.Sprintf("%s-%s-%s-%04d", d.device, d.camera, at.UTC().Format("20060102T150405Z"), d.seq%10000),
		Phase: mqtt.AlertStart, Label: label, Confidence: conf, Start: at}
	return append(out, *d.active)
}

func (d *Decider) end(at time.Time, reason string) Event {
	e := *d.active
	e.Phase, e.End, e.Reason = mqtt.AlertEnd, at, reason
	d.active = nil
	return e
}

// DecisionState is what survives a restart: the ongoing alert, the last
// alert per label (cooldowns) and the event counter. The recent samples
// are not kept: k of the next n decide again.
type DecisionState struct {
	Active  *Event               `json:"active,omitempty"`
	Last    map[string]time.Time `json:"last"`
	Seq     uint64               `json:"seq"`
	SavedAt time.Time            `json:"saved_at"`
}

// State returns what to persist.
func (d *Decider) State(now time.Time) DecisionState {
	s := DecisionState{Last: map[string]time.Time{}, Seq: d.seq, SavedAt: now.UTC()}
	for k, v := range d.last {
		s.Last[k] = v
	}
	if d.active != nil {
		a := *d.active
		s.Active = &a
	}
	return s
}

// Restore continues from a saved state. An alert that was ongoing goes on
// under its event id when the daemon was down less than resumeWithin;
// otherwise it is ended explicitly (reason "stale", at the time the state
// was saved), and that end event is returned for publishing.
func (d *Decider) Restore(s DecisionState, now time.Time, resumeWithin time.Duration) []Event {
	d.seq = s.Seq
	for k, v := range s.Last {
		d.last[k] = v
	}
	if s.Active == nil {
		return nil
	}
	a := *s.Active
	d.active = &a
	if down := now.Sub(s.SavedAt); down < 0 || down > resumeWithin {
		return []Event{d.end(s.SavedAt, EndStale)}
	}
	return nil
}
