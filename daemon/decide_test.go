package daemon

import (
	"strings"
	"testing"
	"time"

	"github.com/leafwatch/leafwatch/model"
)

func TestDecider(t *testing.T) {
	const blight, healthy = "Tomato___Late_blight", "Tomato___healthy"
	t0 := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	cases := []struct {
		name   string
		labels []string
		want   []string // "phase:label" per decided event
	}{
		{"k of n starts", []string{healthy, blight, healthy, blight, blight}, []string{"start:" + blight}},
		{"not enough agreement", []string{blight, healthy, blight, healthy, healthy}, nil},
		{"uncertain never alerts", []string{Uncertain, Uncertain, Uncertain, Uncertain}, nil},
		{"healthy never alerts", []string{healthy, healthy, healthy}, nil},
		{"ends when healthy again", []string{blight, blight, blight, healthy, healthy, healthy}, []string{"start:" + blight, "end:" + blight}},
		{"one alert while active", []string{blight, blight, blight, blight, blight, blight}, []string{"start:" + blight}},
		{"cooldown blocks a quick repeat", []string{blight, blight, blight, healthy, healthy, healthy, blight, blight, blight}, []string{"start:" + blight, "end:" + blight}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := NewDecider("gh", "cam", DecisionConfig{Threshold: 0.7, K: 3, N: 5, Cooldown: time.Hour})
			var got []string
			for i, l := range tc.labels {
				for _, e := range d.Observe(l, 0.9, t0.Add(time.Duration(i)*time.Minute)) {
					got = append(got, e.Phase+":"+e.Label)
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("events %v, want %v", got, tc.want)
			}
		})
	}
}

func TestDeciderThresholds(t *testing.T) {
	d := NewDecider("gh", "cam", DecisionConfig{Threshold: 0.7, K: 1, N: 1, PerClass: map[string]float32{"Tomato___Late_blight": 0.5}})
	if l := d.Label(model.Scored{Label: "Apple___Black_rot", Prob: 0.6}); l != Uncertain {
		t.Errorf("0.6 < 0.7 gave %q", l)
	}
	if l := d.Label(model.Scored{Label: "Tomato___Late_blight", Prob: 0.6}); l != "Tomato___Late_blight" {
		t.Errorf("per-class 0.5 threshold: %q", l)
	}
}

func TestConfigErrorsHaveLines(t *testing.T) {
	bad := "device: gh1\nmodel: /m.safetensors\ncamras: []\ncameras:\n  - name: bench1\n    source: file:///x.mp4\n    intervall: 5s\n    decision:\n      k: three\n      threshold: 2\n  - name: bench1\n    source: ftp://nope\n"
	_, err := ParseConfig("leafwatchd.yaml", []byte(bad))
	if err == nil {
		t.Fatal("bad config accepted")
	}
	msg := err.Error()
	for _, want := range []string{"line 3: field camras not found", "line 7: field intervall not found", "line 9: cannot unmarshal", "line 10: cameras.0.decision.threshold", "line 11: cameras.1.name: \"bench1\" is used twice", "line 12: cameras.1.source"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not report %q:\n%s", want, msg)
		}
	}
	if _, err := ParseConfig("default", []byte(DefaultConfigYAML())); err != nil {
		t.Errorf("the shipped example config is invalid: %v", err)
	}
}

// TestNotALeafNeverAlerts: a model trained with the reject class answers
// not_a_leaf for background; however sure and however often, that is no
// disease, does not end an alert as healthy would, and is never chosen
// over a disease.
func TestNotALeafNeverAlerts(t *testing.T) {
	d := NewDecider("gh", "cam", DecisionConfig{Threshold: 0.5, K: 2, N: 3, Cooldown: time.Minute})
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	for i := 0; i < 10; i++ {
		if ev := d.Observe(d.Label(model.Scored{Label: model.NotALeaf, Prob: 0.99}), 0.99, at.Add(time.Duration(i)*time.Second)); len(ev) != 0 {
			t.Fatalf("not_a_leaf raised %+v", ev)
		}
	}
	if IsDisease(model.NotALeaf) {
		t.Error("not_a_leaf counted as a disease")
	}
	// An ongoing alert is not ended by not_a_leaf samples.
	for i := 0; i < 2; i++ {
		d.Observe("Tomato___Late_blight", 0.9, at.Add(time.Minute+time.Duration(i)*time.Second))
	}
	if d.Active() == nil {
		t.Fatal("no alert for two late blight samples")
	}
	for i := 0; i < 5; i++ {
		if ev := d.Observe(model.NotALeaf, 0.99, at.Add(2*time.Minute+time.Duration(i)*time.Second)); len(ev) != 0 {
			t.Fatalf("not_a_leaf ended the alert: %+v", ev)
		}
	}
	preds := []model.Prediction{
		{Top: []model.Scored{{Label: model.NotALeaf, Prob: 0.99}}},
		{Top: []model.Scored{{Label: "Tomato___Late_blight", Prob: 0.6}}},
	}
	if d.Choose(preds) != 1 {
		t.Error("a sure not_a_leaf region answered for the camera over a disease")
	}
}
