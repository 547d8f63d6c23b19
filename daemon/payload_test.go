package daemon

import (
	"image"
	"testing"
	"time"

	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/mqtt"
)

// The decide and payload steps, without a broker, a camera or a model run.

func pred(label string, p float32) model.Prediction {
	return model.Prediction{Top: []model.Scored{{Label: label, Prob: p}, {Label: "Tomato___healthy", Prob: 1 - p}}}
}

func TestChooseAndPayloads(t *testing.T) {
	dec := NewDecider("gh", "cam", DecisionConfig{Threshold: 0.6, K: 1, N: 1, Cooldown: time.Hour})
	m, _ := model.NewRandom(model.TorchVision, 3, 1)
	m.Meta.Version = "v1"
	inf := inference{m: m,
		boxes: []image.Rectangle{image.Rect(0, 0, 640, 480), image.Rect(0, 0, 320, 240), image.Rect(320, 240, 640, 480)},
		preds: []model.Prediction{pred("Tomato___healthy", 0.95), pred("Tomato___Late_blight", 0.7), pred("Tomato___Leaf_Mold", 0.55)}}
	// The confident disease wins over a more confident healthy region; the
	// leaf mold region is below threshold (uncertain).
	best := dec.Choose(inf.preds)
	if best != 1 {
		t.Fatalf("chose region %d, want the late blight tile", best)
	}
	at := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	cls, marks := classification("cam", dec, inf, best, at)
	if cls.Label != "Tomato___Late_blight" || cls.Display != "Tomato: Late blight" || cls.Model != "v1" || len(cls.Tiles) != 3 || len(cls.Top) != 2 {
		t.Fatalf("classification %+v", cls)
	}
	if cls.Tiles[2].Label != Uncertain || !marks[1].Alert || marks[0].Alert || marks[2].Alert {
		t.Errorf("tiles %+v marks %+v", cls.Tiles, marks)
	}
	events := dec.Observe(cls.Label, cls.Confidence, at)
	if len(events) != 1 || events[0].Phase != mqtt.AlertStart {
		t.Fatalf("events %+v", events)
	}
	a := alertPayload("cam", events[0], "v1", "/snap.jpg")
	if a.EventID != events[0].ID || a.Phase != mqtt.AlertStart || !a.End.IsZero() || a.Snapshot != "/snap.jpg" || a.Reason != "" {
		t.Errorf("start payload %+v", a)
	}
	ends := dec.Observe("Tomato___healthy", 0.9, at.Add(time.Minute))
	e := alertPayload("cam", ends[0], "v1", "")
	if e.Phase != mqtt.AlertEnd || e.EventID != a.EventID || e.Reason != EndHealthy || !e.End.Equal(at.Add(time.Minute)) {
		t.Errorf("end payload %+v", e)
	}
	// A single region answers for itself.
	one := inference{m: m, boxes: inf.boxes[:1], preds: inf.preds[:1]}
	if c, marks := classification("cam", dec, one, 0, at); len(c.Tiles) != 0 || marks != nil {
		t.Errorf("an untiled frame has tiles: %+v", c.Tiles)
	}
}

// TestDeciderStateRoundTrip: a state saved during an alert restores the
// alert, its cooldowns and the event counter.
func TestDeciderStateRoundTrip(t *testing.T) {
	cfg := DecisionConfig{Threshold: 0.5, K: 1, N: 1, Cooldown: time.Hour}
	a := NewDecider("gh", "cam", cfg)
	t0 := time.Now()
	start := a.Observe("Tomato___Late_blight", 0.9, t0)[0]
	st := a.State(t0)
	b := NewDecider("gh", "cam", cfg)
	if ends := b.Restore(st, t0.Add(time.Minute), time.Hour); len(ends) != 0 {
		t.Fatalf("a fresh state ended the alert: %+v", ends)
	}
	if b.Active() == nil || b.Active().ID != start.ID {
		t.Fatalf("active %+v", b.Active())
	}
	if ev := b.Observe("Tomato___Late_blight", 0.9, t0.Add(2*time.Minute)); len(ev) != 0 {
		t.Errorf("the continued alert started again: %+v", ev)
	}
	next := b.Observe("Tomato___Leaf_Mold", 0.9, t0.Add(3*time.Minute))
	if len(next) != 2 || next[1].ID == start.ID || next[0].Reason != EndReplaced {
		t.Errorf("a new disease after restore: %+v", next)
	}
	c := NewDecider("gh", "cam", cfg)
	ends := c.Restore(st, t0.Add(2*time.Hour), time.Hour)
	if len(ends) != 1 || ends[0].Reason != EndStale || !ends[0].End.Equal(st.SavedAt) || c.Active() != nil {
		t.Errorf("stale restore: %+v", ends)
	}
}
