// Package daemon owns leafwatchd: its configuration, the per-camera
// capture → preprocess → classify → decide → publish pipeline, the alert
// decision, model reloads, and the HTTP health, metrics and status pages.
// Nothing below it imports it.
package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/leafwatch/leafwatch/daemon/fleet"
	"github.com/leafwatch/leafwatch/daemon/samples"
	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/model/engine"
	"github.com/leafwatch/leafwatch/mqtt"
	"github.com/leafwatch/leafwatch/systemd"
	"github.com/leafwatch/leafwatch/vision"
)

// Config is the whole leafwatchd configuration (one YAML file).
type Config struct {
	Device string `yaml:"device"`
	Model  string `yaml:"model"`  // checkpoint path
	Engine string `yaml:"engine"` // auto, cpu or cuda
	// Precision of the CPU engine's large FC weights: fp16 (default,
	// model.DefaultPrecision), fp32, bf16 or int8 — the reduced ones are
	// faster and smaller, with slightly different answers (README). The
	// CUDA engine runs fp16 (weights and GEMM inputs, fp32 sums) when this
	// says fp16 and the GPU has fp16 arithmetic, fp32 otherwise.
	Precision string `yaml:"precision"`
	// CUDALibs are folders to take cuBLAS and NVRTC from instead of
	// searching (the loader path, /usr/local/cuda*, JetPack's folders).
	CUDALibs []string          `yaml:"cuda_libs"`
	StateDir string            `yaml:"state_dir"` // outbox, snapshots, decision state
	Listen   string            `yaml:"listen"`    // HTTP, loopback by default
	HTTPAuth HTTPAuth          `yaml:"http_auth"`
	HTTPTLS  HTTPTLS           `yaml:"http_tls"` // HTTPS instead of HTTP
	TopK     int               `yaml:"top_k"`
	Broker   string            `yaml:"broker"` // "embedded" or a broker URL
	MQTT     mqtt.Config       `yaml:"mqtt"`
	Embedded mqtt.BrokerConfig `yaml:"embedded_broker"`
	OutboxMB int               `yaml:"outbox_mb"`
	// ReloadMinInterval spaces model reloads: a burst of SIGHUPs or file
	// changes becomes one reload now and one at the end of the interval.
	ReloadMinInterval time.Duration  `yaml:"reload_min_interval"`
	Snapshots         SnapshotConfig `yaml:"snapshots"`
	Samples           SamplesConfig  `yaml:"samples"`
	// Models decides which new models this device takes: trusted keys,
	// acceptance on the labelled samples, rollback (daemon/fleet).
	Models fleet.Config `yaml:"models"`
	// Fleet is the group whose model announcements this device follows.
	Fleet   fleet.Group    `yaml:"fleet"`
	Stats   time.Duration  `yaml:"stats_interval"`
	Cameras []CameraConfig `yaml:"cameras"`
	// ExitWhenSourcesEnd stops the daemon once every camera source has
	// ended (video files without loop): for demos and tests.
	ExitWhenSourcesEnd bool `yaml:"exit_when_sources_end"`
}

// HTTPAuth protects the HTTP server; /healthz stays open for probes.
type HTTPAuth struct {
	// TokenFile holds a bearer token (first line): requests need
	// "Authorization: Bearer <token>".
	TokenFile string `yaml:"token_file"`
	// BasicAuthFile holds "user:password" lines.
	BasicAuthFile string `yaml:"basic_auth_file"`
}

// Enabled reports whether any authentication is configured.
func (a HTTPAuth) Enabled() bool { return a.TokenFile != "" || a.BasicAuthFile != "" }

// SamplesConfig is the store of kept samples (the cameras' keep: settings
// choose what goes in).
type SamplesConfig struct {
	// MaxMB caps the disk the samples take; beyond it the oldest unlabelled
	// go first, never a labelled one.
	MaxMB int `yaml:"max_mb"`
	// TargetPerClass is how many labelled samples per class the labelling
	// page counts towards ("enough to retrain").
	TargetPerClass int `yaml:"target_per_class"`
	// FrameWidth is the width of the whole-frame copy kept beside each
	// sample (the region itself is kept at full resolution).
	FrameWidth int `yaml:"frame_width"`
}

// SnapshotConfig controls annotated JPEGs.
type SnapshotConfig struct {
	Width   int `yaml:"width"`
	Quality int `yaml:"quality"`
	MaxMB   int `yaml:"max_mb"`
}

// CameraConfig is one camera.
type CameraConfig struct {
	Name     string        `yaml:"name"`
	Source   string        `yaml:"source"`
	Interval time.Duration `yaml:"interval"`
	// Regions: "leaves" (find the leaves, classify each) or "tiles" (the
	// tiling's grid). Leaves fall back to the tiling (or the whole frame)
	// on frames without colour or vegetation.
	Regions  string         `yaml:"regions"`
	Leaves   vision.Leaves  `yaml:"leaves"`
	Tiling   vision.Tiling  `yaml:"tiling"`
	Decision DecisionConfig `yaml:"decision"`
	Keep     samples.Config `yaml:"keep"` // which samples to keep for labelling
}

// RegionConfig is the camera's regions for the preprocessor.
func (c CameraConfig) RegionConfig() vision.Regions {
	return vision.Regions{Mode: c.Regions, Tiling: c.Tiling, Leaves: c.Leaves}
}

// DecisionConfig decides when a disease is really there.
type DecisionConfig struct {
	Threshold float32            `yaml:"threshold"` // below: "uncertain"
	K         int                `yaml:"k"`         // agreeing samples …
	N         int                `yaml:"n"`         // … of the last n
	Cooldown  time.Duration      `yaml:"cooldown"`  // min time between alerts for one label
	PerClass  map[string]float32 `yaml:"per_class"` // threshold overrides by label
}

// DefaultConfig holds every default; a key absent from the file keeps its
// value here. MQTT's device and client id follow the device name unless
// set. The shipped leafwatchd.yaml states the same values (tested).
func DefaultConfig() Config {
	m := mqtt.DefaultConfig("")
	return Config{
		Device: "greenhouse1", Model: "/var/lib/leafwatch/model.safetensors", Engine: "auto", StateDir: "/var/lib/leafwatch",
		Listen: "127.0.0.1:8080", TopK: 3, Precision: string(model.DefaultPrecision), Broker: "embedded", MQTT: m,
		Embedded: mqtt.BrokerConfig{Address: "127.0.0.1:1883"}, OutboxMB: 64, ReloadMinInterval: 10 * time.Second,
		Snapshots: SnapshotConfig{Width: 960, Quality: 85, MaxMB: 512}, Stats: time.Minute,
		Samples: SamplesConfig{MaxMB: 2048, TargetPerClass: 20, FrameWidth: 640},
		Models:  fleet.DefaultConfig(), Fleet: fleet.Group{Group: "default"},
	}
}

// DefaultCamera holds the per-camera defaults.
func DefaultCamera() CameraConfig {
	return CameraConfig{Interval: 5 * time.Second, Regions: vision.RegionsLeaves, Leaves: vision.DefaultLeaves(), Decision: DefaultDecision(), Keep: samples.DefaultConfig()}
}

// DefaultDecision: 3 of the last 5 samples at ≥ 70 % confidence, one alert
// per label per 30 minutes.
func DefaultDecision() DecisionConfig {
	return DecisionConfig{Threshold: 0.7, K: 3, N: 5, Cooldown: 30 * time.Minute}
}

// ConfigError lists every problem found, each with its line.
type ConfigError struct {
	File     string
	Problems []string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("%s: %d problem(s):\n  %s", e.File, len(e.Problems), strings.Join(e.Problems, "\n  "))
}

// LoadConfig reads, defaults and validates a config file.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return ParseConfig(path, b)
}

// ParseConfig decodes YAML strictly (unknown keys and wrong types are
// errors with their line numbers), applies the defaults of absent keys in
// one step, and validates without changing anything.
func ParseConfig(name string, b []byte) (Config, error) {
	cfg := DefaultConfig()
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return cfg, &ConfigError{name, []string{err.Error()}}
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var probs []string
	if err := dec.Decode(&cfg); err != nil && err != io.EOF {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			probs = append(probs, te.Errors...)
		} else {
			probs = append(probs, err.Error())
		}
	}
	cfg.applyDefaults(&root)
	probs = append(probs, cfg.validate(&root)...)
	if len(probs) > 0 {
		return cfg, &ConfigError{name, probs}
	}
	return cfg, nil
}

// applyDefaults fills what the file left out: per-camera settings absent
// from each camera, and the values derived from others.
func (c *Config) applyDefaults(root *yaml.Node) {
	def := DefaultCamera()
	for i := range c.Cameras {
		cam, idx := &c.Cameras[i], fmt.Sprint(i)
		if !present(root, "cameras", idx, "interval") {
			cam.Interval = def.Interval
		}
		if !present(root, "cameras", idx, "decision", "threshold") {
			cam.Decision.Threshold = def.Decision.Threshold
		}
		if !present(root, "cameras", idx, "decision", "k") {
			cam.Decision.K = def.Decision.K
		}
		if !present(root, "cameras", idx, "decision", "n") {
			cam.Decision.N = max(def.Decision.N, cam.Decision.K)
		}
		if !present(root, "cameras", idx, "decision", "cooldown") {
			cam.Decision.Cooldown = def.Decision.Cooldown
		}
		fillAbsent(root, []string{"cameras", idx, "keep"}, &cam.Keep, def.Keep)
		fillAbsent(root, []string{"cameras", idx, "leaves"}, &cam.Leaves, def.Leaves)
		if !present(root, "cameras", idx, "regions") {
			cam.Regions = def.Regions
		}
	}
	if c.MQTT.Device == "" {
		c.MQTT.Device = c.Device
	}
	if c.MQTT.ClientID == "" {
		c.MQTT.ClientID = "leafwatch-" + c.Device
	}
	if c.Broker == "embedded" {
		c.MQTT.Broker = "tcp://" + c.Embedded.Address
	} else {
		c.MQTT.Broker = c.Broker
	}
}

// node finds the value node of a key path ("cameras", "1", "source").
func node(root *yaml.Node, path ...string) (key, val *yaml.Node) {
	if root == nil {
		return nil, nil
	}
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	for _, p := range path {
		found := false
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == p {
					key, n, found = n.Content[i], n.Content[i+1], true
					break
				}
			}
		case yaml.SequenceNode:
			var idx int
			if _, err := fmt.Sscan(p, &idx); err == nil && idx < len(n.Content) {
				key, n, found = n.Content[idx], n.Content[idx], true
			}
		}
		if !found {
			return key, nil
		}
	}
	return key, n
}

// fillAbsent sets each field of *dst (a struct with yaml tags) that the
// file does not state under path to its value in def.
func fillAbsent[T any](root *yaml.Node, path []string, dst *T, def T) {
	dv, fv := reflect.ValueOf(dst).Elem(), reflect.ValueOf(def)
	for i := 0; i < dv.NumField(); i++ {
		key, _, _ := strings.Cut(dv.Type().Field(i).Tag.Get("yaml"), ",")
		if key == "" || key == "-" {
			continue
		}
		if !present(root, append(slices.Clone(path), key)...) {
			dv.Field(i).Set(fv.Field(i))
		}
	}
}

func present(root *yaml.Node, path ...string) bool {
	_, v := node(root, path...)
	return v != nil
}

// lineOf finds the line of a key path in the document, or of the nearest
// enclosing key, or 0.
func lineOf(root *yaml.Node, path ...string) int {
	for n := len(path); n > 0; n-- {
		if k, _ := node(root, path[:n]...); k != nil {
			if _, v := node(root, path[:n]...); v != nil {
				return k.Line
			}
		}
	}
	return 0
}

// IsLoopback reports whether a listen address only reaches this machine.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (c *Config) validate(root *yaml.Node) []string {
	var probs []string
	add := func(msg string, path ...string) {
		if l := lineOf(root, path...); l > 0 {
			msg = fmt.Sprintf("line %d: %s: %s", l, strings.Join(path, "."), msg)
		} else {
			msg = strings.Join(path, ".") + ": " + msg
		}
		probs = append(probs, msg)
	}
	if !mqtt.ValidName(c.Device) {
		add(fmt.Sprintf("%q: use letters, digits, '_' or '-'", c.Device), "device")
	}
	if c.Model == "" {
		add("no checkpoint path", "model")
	}
	if err := engine.Validate(c.Engine); err != nil {
		add(fmt.Sprintf("%q: use auto, cpu or cuda", c.Engine), "engine")
	}
	if _, err := model.ParsePrecision(c.Precision); err != nil {
		add(err.Error(), "precision")
	}
	if c.StateDir == "" {
		add("no state directory", "state_dir")
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		add(fmt.Sprintf("%q: use host:port (127.0.0.1:8080)", c.Listen), "listen")
	}
	if err := c.HTTPTLS.validate(); err != nil {
		add(err.Error(), "http_tls")
	}
	if c.TopK < 1 || c.TopK > 100 {
		add(fmt.Sprintf("%d: use 1..100 (more than the model's classes lists them all)", c.TopK), "top_k")
	}
	c.validateBroker(add)
	if c.OutboxMB < 1 {
		add("must be at least 1", "outbox_mb")
	}
	if c.ReloadMinInterval < 0 || c.ReloadMinInterval > time.Hour {
		add(fmt.Sprintf("%v: use 0..1h", c.ReloadMinInterval), "reload_min_interval")
	}
	if c.Snapshots.Quality < 1 || c.Snapshots.Quality > 100 {
		add(fmt.Sprintf("%d: use 1..100", c.Snapshots.Quality), "snapshots", "quality")
	}
	if c.Snapshots.Width < 64 || c.Snapshots.Width > 8192 {
		add(fmt.Sprintf("%d: use 64..8192 pixels", c.Snapshots.Width), "snapshots", "width")
	}
	if c.Snapshots.MaxMB < 1 {
		add("must be at least 1", "snapshots", "max_mb")
	}
	if c.Samples.MaxMB < 16 {
		add(fmt.Sprintf("%d: use at least 16", c.Samples.MaxMB), "samples", "max_mb")
	}
	if c.Samples.TargetPerClass < 1 || c.Samples.TargetPerClass > 100000 {
		add(fmt.Sprintf("%d: use 1..100000", c.Samples.TargetPerClass), "samples", "target_per_class")
	}
	if c.Samples.FrameWidth < 64 || c.Samples.FrameWidth > 4096 {
		add(fmt.Sprintf("%d: use 64..4096 pixels", c.Samples.FrameWidth), "samples", "frame_width")
	}
	if err := c.Models.Validate(); err != nil {
		for _, e := range unjoin(err) {
			add(e.Error(), "models")
		}
	}
	if err := c.Fleet.Validate(); err != nil {
		add(err.Error(), "fleet")
	}
	if c.Stats < 0 || (c.Stats > 0 && c.Stats < time.Second) {
		add(fmt.Sprintf("%v: use 0 (off) or at least 1s", c.Stats), "stats_interval")
	}
	if len(c.Cameras) == 0 {
		add("no cameras configured", "cameras")
	}
	c.validateCameras(add)
	return probs
}

// validateBroker checks the broker settings, saying each problem of the
// broker address once under the key the user wrote it in (broker or
// embedded_broker).
func (c *Config) validateBroker(add func(msg string, path ...string)) {
	embeddedErr := error(nil)
	if c.Broker == "embedded" {
		if embeddedErr = c.Embedded.Validate(); embeddedErr != nil {
			add(embeddedErr.Error(), "embedded_broker")
		}
	}
	if err := c.MQTT.Validate(); err != nil {
		each := []error{err}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			each = j.Unwrap()
		}
		for _, e := range each {
			var be *mqtt.BrokerError
			switch {
			case !errors.As(e, &be):
				add(e.Error(), "mqtt")
			case c.Broker != "embedded":
				add(e.Error(), "broker")
			case embeddedErr == nil: // else already said of the address
				add(e.Error(), "embedded_broker")
			}
		}
	}
}

// validateCameras checks each camera's settings.
func (c *Config) validateCameras(add func(msg string, path ...string)) {
	seen := map[string]bool{}
	for i, cam := range c.Cameras {
		idx := fmt.Sprint(i)
		if !mqtt.ValidName(cam.Name) {
			add(fmt.Sprintf("%q: use letters, digits, '_' or '-'", cam.Name), "cameras", idx, "name")
		} else if seen[cam.Name] {
			add(fmt.Sprintf("%q is used twice", cam.Name), "cameras", idx, "name")
		}
		seen[cam.Name] = true
		if _, err := vision.ParseSource(cam.Source); err != nil {
			add(err.Error(), "cameras", idx, "source")
		}
		if cam.Interval < 100*time.Millisecond || cam.Interval > 24*time.Hour {
			add(fmt.Sprintf("%v: use 100ms..24h", cam.Interval), "cameras", idx, "interval")
		}
		if err := cam.Tiling.Validate(); err != nil {
			add(err.Error(), "cameras", idx, "tiling")
		}
		if cam.Regions != vision.RegionsLeaves && cam.Regions != vision.RegionsTiles {
			add(fmt.Sprintf("%q: use leaves or tiles", cam.Regions), "cameras", idx, "regions")
		} else if err := cam.Leaves.Validate(); err != nil {
			for _, e := range unjoin(err) {
				add(e.Error(), "cameras", idx, "leaves")
			}
		}
		d := cam.Decision
		if !(d.Threshold > 0 && d.Threshold <= 1) {
			add(fmt.Sprintf("%v: use a probability in (0, 1]", d.Threshold), "cameras", idx, "decision", "threshold")
		}
		if d.K < 1 || d.N < d.K || d.N > 100 {
			add(fmt.Sprintf("k=%d of n=%d: need 1 ≤ k ≤ n ≤ 100", d.K, d.N), "cameras", idx, "decision")
		}
		if d.Cooldown < 0 {
			add(fmt.Sprintf("%v: must not be negative", d.Cooldown), "cameras", idx, "decision", "cooldown")
		}
		if err := cam.Keep.Validate(); err != nil {
			for _, e := range unjoin(err) {
				add(e.Error(), "cameras", idx, "keep")
			}
		}
		for l, th := range d.PerClass {
			if !(th > 0 && th <= 1) {
				add(fmt.Sprintf("%q: %v is not a probability", l, th), "cameras", idx, "decision", "per_class")
			}
		}
	}
}

// unjoin splits an errors.Join into its errors.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// DefaultConfigYAML is the documented example (systemd/leafwatchd.yaml).
func DefaultConfigYAML() string { return systemd.ExampleConfig }
