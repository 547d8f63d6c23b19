package daemon

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/leafwatch/leafwatch/daemon/samples"
	"github.com/leafwatch/leafwatch/mqtt"
	"github.com/leafwatch/leafwatch/vision"
)

// TestExampleConfigStatesTheDefaults: the documented leafwatchd.yaml and
// DefaultConfig agree on every setting outside the example camera.
func TestExampleConfigStatesTheDefaults(t *testing.T) {
	ex, err := ParseConfig("example", []byte(DefaultConfigYAML()))
	if err != nil {
		t.Fatal(err)
	}
	def := DefaultConfig()
	def.applyDefaults(nil)
	ex.Cameras, def.Cameras = nil, nil
	if !reflect.DeepEqual(ex, def) {
		t.Errorf("example and defaults differ:\nexample  %+v\ndefaults %+v", ex, def)
	}
}

func TestConfigDefaultsApplyOnlyToAbsentKeys(t *testing.T) {
	base := "cameras:\n  - name: a\n    source: /tmp\n"
	cfg, err := ParseConfig("x", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Cameras[0]
	if c.Interval != 5*time.Second || !reflect.DeepEqual(c.Decision, DefaultDecision()) || !reflect.DeepEqual(c.Keep, samples.DefaultConfig()) {
		t.Errorf("absent keys did not take the defaults: %+v", c)
	}
	if cfg.MQTT.Device != "greenhouse1" || cfg.MQTT.ClientID != "leafwatch-greenhouse1" || cfg.MQTT.Broker != "tcp://127.0.0.1:1883" {
		t.Errorf("derived MQTT settings: %+v", cfg.MQTT)
	}
	// A value written in the file is never replaced by a default, even
	// when it is the zero value: threshold 0 is an error, not 0.7.
	_, err = ParseConfig("x", []byte(base+"    decision: {threshold: 0}\n"))
	if err == nil || !strings.Contains(err.Error(), "threshold") {
		t.Errorf("explicit threshold 0: %v", err)
	}
	cfg, err = ParseConfig("x", []byte(base+"    keep: {enabled: false, margin: 0.3}\n"))
	want := samples.DefaultConfig()
	want.Enabled, want.Margin = false, 0.3
	if err != nil || !reflect.DeepEqual(cfg.Cameras[0].Keep, want) {
		t.Errorf("keep with two keys: %+v (%v)", cfg.Cameras[0].Keep, err)
	}
	ex, err := ParseConfig("example", []byte(DefaultConfigYAML()))
	if err != nil || !reflect.DeepEqual(ex.Cameras[0].Keep, samples.DefaultConfig()) {
		t.Errorf("the example camera's keep is not the default: %+v (%v)", ex.Cameras[0].Keep, err)
	}
	if ex.Cameras[0].Regions != DefaultCamera().Regions || !reflect.DeepEqual(ex.Cameras[0].Leaves, vision.DefaultLeaves()) {
		t.Errorf("the example camera's regions are not the default: %q %+v", ex.Cameras[0].Regions, ex.Cameras[0].Leaves)
	}
	if c := cfg.Cameras[0]; c.Regions != "leaves" || !reflect.DeepEqual(c.Leaves, vision.DefaultLeaves()) {
		t.Errorf("regions default: %q %+v", c.Regions, c.Leaves)
	}
	if _, err := ParseConfig("x", []byte(base+"    regions: blobs\n")); err == nil || !strings.Contains(err.Error(), `regions: "blobs": use leaves or tiles`) {
		t.Errorf("regions blobs: %v", err)
	}
	if _, err := ParseConfig("x", []byte(base+"    leaves: {max_regions: 0}\n")); err == nil || !strings.Contains(err.Error(), "max_regions 0") {
		t.Errorf("max_regions 0: %v", err)
	}
	if _, err := ParseConfig("x", []byte(base+"    keep: {max_per_hour: 0}\n")); err == nil || !strings.Contains(err.Error(), "line 4: cameras.0.keep: max_per_hour 0") {
		t.Errorf("max_per_hour 0: %v", err)
	}
	cfg, err = ParseConfig("x", []byte("device: gh7\nmqtt: {client_id: custom}\n"+base))
	if err != nil || cfg.MQTT.ClientID != "custom" || cfg.MQTT.Device != "gh7" {
		t.Errorf("client id %q device %q (%v)", cfg.MQTT.ClientID, cfg.MQTT.Device, err)
	}
	if _, err := ParseConfig("x", nil); err == nil || !strings.Contains(err.Error(), "no cameras") {
		t.Errorf("empty file: %v", err)
	}
}

func TestConfigRefusesUnsafeOrWrongSettings(t *testing.T) {
	base := "cameras:\n  - name: a\n    source: /tmp\n"
	for _, c := range []struct{ yaml, want string }{
		{"embedded_broker: {address: '0.0.0.0:1883'}\n", "anonymous"},
		{"broker: tcp://mq.lan:1883\nmqtt: {ca_file: /etc/ca.pem}\n", "plaintext"},
		{"top_k: 0\n", "top_k"},
		{"precision: fp8\n", "precision"},
		{"listen: 8080\n", "listen"},
		{"stats_interval: 10ms\n", "stats_interval"},
		{"reload_min_interval: -1s\n", "reload_min_interval"},
	} {
		if _, err := ParseConfig("x", []byte(c.yaml+base)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error about %s", c.yaml, err, c.want)
		}
	}
	ok := []string{
		"embedded_broker: {address: '0.0.0.0:1883', anonymous: true}\n",
		"embedded_broker: {address: '0.0.0.0:1883', users: {leaf: pw}}\n",
		"broker: ssl://mq.lan:8883\nmqtt: {ca_file: /etc/ca.pem}\n",
		"top_k: 50\n",
	}
	for _, y := range ok {
		if _, err := ParseConfig("x", []byte(y+base)); err != nil {
			t.Errorf("%q refused: %v", y, err)
		}
	}
	if got := (mqtt.BrokerConfig{Address: "127.0.0.1:1883"}).Validate(); got != nil {
		t.Errorf("loopback broker without users: %v", got)
	}
}

// TestBrokerErrorsPointAtTheBrokerLine: a bad broker URL is reported at
// the line of broker (or embedded_broker), not of mqtt, and credentials in
// it are refused without being quoted.
func TestBrokerErrorsPointAtTheBrokerLine(t *testing.T) {
	cams := "cameras:\n  - name: a\n    source: /tmp\n"
	for _, tc := range []struct{ yaml, want string }{
		{"mqtt: {prefix: lw}\nbroker: tcp://leaf:s3cret@mq.lan:1883\n", "line 2: broker: "},
		{"broker: tcp://mq.lan\nmqtt: {prefix: lw}\n", "line 1: broker: "},
		{"mqtt: {prefix: lw}\nembedded_broker: {address: 127.0.0.1}\n", "line 2: embedded_broker: "},
	} {
		_, err := ParseConfig("x", []byte(tc.yaml+cams))
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "s3cret") ||
			strings.Count(err.Error(), "\n  line") != 1 {
			t.Errorf("%q: %v, want one problem at %q, no password", tc.yaml, err, tc.want)
		}
	}
}

// TestSourceOptionErrorsHaveLines: source options that used to crash or
// wedge the daemon are refused by check-config, with their line.
func TestSourceOptionErrorsHaveLines(t *testing.T) {
	for _, q := range []string{"read_timeout=0s", "open_timeout=0", "fps=0", "read_timeout=20ms"} {
		yaml := "cameras:\n  - name: a\n    source: file:///x.mp4?" + q + "\n"
		_, err := ParseConfig("x", []byte(yaml))
		if err == nil || !strings.Contains(err.Error(), "line 3: cameras.0.source") {
			t.Errorf("%s: %v", q, err)
		}
	}
}
