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
