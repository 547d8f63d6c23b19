// Package daemon owns leafwatchd: its configuration, the per-camera
// capture → preprocess → classify → decide → publish pipeline, the alert
// decision, model reloads, and the HTTP health, metrics and status pages.
// Nothing below it imports it.
package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/leafwatch/leafwatch/mqtt"
	"github.com/leafwatch/leafwatch/systemd"
	"github.com/leafwatch/leafwatch/vision"
)

// Config is the whole leafwatchd configuration (one YAML file).
type Config struct {
	Device string `yaml:"device"`
	Model  string `yaml:"model"`  // checkpoint path
	Engine string `yaml:"engine"` // auto, cpu or cuda
	// CUDALibs are folders to take cuBLAS and NVRTC from instead of
	// searching (the loader path, /usr/local/cuda*, JetPack's folders).
	CUDALibs  []string          `yaml:"cuda_libs"`
	StateDir  string            `yaml:"state_dir"` // outbox and snapshots
	Listen    string            `yaml:"listen"`    // HTTP, loopback by default
	TopK      int               `yaml:"top_k"`
	Broker    string            `yaml:"broker"` // "embedded" or a broker URL
	MQTT      mqtt.Config       `yaml:"mqtt"`
	Embedded  mqtt.BrokerConfig `yaml:"embedded_broker"`
	OutboxMB  int               `yaml:"outbox_mb"`
	Snapshots SnapshotConfig    `yaml:"snapshots"`
	Stats     time.Duration     `yaml:"stats_interval"`
	Cameras   []CameraConfig    `yaml:"cameras"`
	// ExitWhenSourcesEnd stops the daemon once every camera source has
	// ended (video files without loop): for demos and tests.
	ExitWhenSourcesEnd bool `yaml:"exit_when_sources_end"`
}

// SnapshotConfig controls annotated JPEGs.
type SnapshotConfig struct {
	Width   int `yaml:"width"`
	Quality int `yaml:"quality"`
	MaxMB   int `yaml:"max_mb"`
}

// CameraConfig is one camera.
type CameraConfig struct {
	Name     string         `yaml:"name"`
	Source   string         `yaml:"source"`
	Interval time.Duration  `yaml:"interval"`
	Tiling   vision.Tiling  `yaml:"tiling"`
	Decision DecisionConfig `yaml:"decision"`
}

// DecisionConfig decides when a disease is really there.
type DecisionConfig struct {
	Threshold float32            `yaml:"threshold"` // below: "uncertain"
	K         int                `yaml:"k"`         // agreeing samples …
	N         int                `yaml:"n"`         // … of the last n
	Cooldown  time.Duration      `yaml:"cooldown"`  // min time between alerts for one label
	PerClass  map[string]float32 `yaml:"per_class"` // threshold overrides by label
}

// DefaultConfig is what print-default-config shows and what unset keys take.
func DefaultConfig() Config {
	m := mqtt.DefaultConfig("greenhouse1")
	return Config{
		Device: "greenhouse1", Model: "/var/lib/leafwatch/model.safetensors", Engine: "auto", StateDir: "/var/lib/leafwatch",
		Listen: "127.0.0.1:8080", TopK: 3, Broker: "embedded", MQTT: m,
		Embedded: mqtt.BrokerConfig{Address: "127.0.0.1:1883"}, OutboxMB: 64,
		Snapshots: SnapshotConfig{Width: 960, Quality: 85, MaxMB: 512}, Stats: time.Minute,
		Cameras: []CameraConfig{{Name: "bench1", Source: "v4l2:///dev/video0?width=1280&height=720", Interval: 5 * time.Second,
			Decision: DefaultDecision()}},
	}
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

// ParseConfig decodes YAML strictly: unknown keys and wrong types are
// errors with their line numbers, and values are validated.
func ParseConfig(name string, b []byte) (Config, error) {
	cfg := DefaultConfig()
	cfg.Cameras = nil
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return cfg, &ConfigError{name, []string{err.Error()}}
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var probs []string
	if err := dec.Decode(&cfg); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			probs = append(probs, te.Errors...)
		} else {
			probs = append(probs, err.Error())
		}
	}
	if cfg.MQTT.Device == "" || cfg.MQTT.Device == "greenhouse1" {
		cfg.MQTT.Device = cfg.Device
	}
	if cfg.MQTT.ClientID == "" || cfg.MQTT.ClientID == "leafwatch-greenhouse1" {
		cfg.MQTT.ClientID = "leafwatch-" + cfg.Device
	}
	for i := range cfg.Cameras {
		c := &cfg.Cameras[i]
		if c.Interval == 0 {
			c.Interval = 5 * time.Second
		}
		d := DefaultDecision()
		if c.Decision.Threshold == 0 {
			c.Decision.Threshold = d.Threshold
		}
		if c.Decision.K == 0 {
			c.Decision.K = d.K
		}
		if c.Decision.N == 0 {
			c.Decision.N = max(d.N, c.Decision.K)
		}
		if c.Decision.Cooldown == 0 {
			c.Decision.Cooldown = d.Cooldown
		}
	}
	probs = append(probs, cfg.validate(&root)...)
	if len(probs) > 0 {
		return cfg, &ConfigError{name, probs}
	}
	return cfg, nil
}

// lineOf finds the line of a key path ("cameras", "1", "source") in the
// document, or 0.
func lineOf(root *yaml.Node, path ...string) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := 0
	for _, p := range path {
		found := false
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == p {
					line, n, found = n.Content[i].Line, n.Content[i+1], true
					break
				}
			}
		case yaml.SequenceNode:
			var idx int
			if _, err := fmt.Sscan(p, &idx); err == nil && idx < len(n.Content) {
				n, found = n.Content[idx], true
				line = n.Line
			}
		}
		if !found {
			return line
		}
	}
	return line
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
	if c.Engine != "auto" && c.Engine != "cpu" && c.Engine != "cuda" {
		add(fmt.Sprintf("%q: use auto, cpu or cuda", c.Engine), "engine")
	}
	if c.StateDir == "" {
		add("no state directory", "state_dir")
	}
	if c.TopK < 1 || c.TopK > 38 {
		add(fmt.Sprintf("%d: use 1..38", c.TopK), "top_k")
	}
	if c.Broker != "embedded" {
		c.MQTT.Broker = c.Broker
	} else {
		c.MQTT.Broker = "tcp://" + c.Embedded.Address
	}
	if err := c.MQTT.Validate(); err != nil {
		for _, e := range strings.Split(err.Error(), "\n") {
			add(e, "mqtt")
		}
	}
	if c.OutboxMB < 1 {
		add("must be at least 1", "outbox_mb")
	}
	if c.Snapshots.Quality < 1 || c.Snapshots.Quality > 100 {
		add(fmt.Sprintf("%d: use 1..100", c.Snapshots.Quality), "snapshots", "quality")
	}
	if c.Snapshots.MaxMB < 1 {
		add("must be at least 1", "snapshots", "max_mb")
	}
	if len(c.Cameras) == 0 {
		add("no cameras configured", "cameras")
	}
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
		if cam.Interval < 100*time.Millisecond {
			add(fmt.Sprintf("%v: use at least 100ms", cam.Interval), "cameras", idx, "interval")
		}
		if err := cam.Tiling.Validate(); err != nil {
			add(err.Error(), "cameras", idx, "tiling")
		}
		d := cam.Decision
		if d.Threshold <= 0 || d.Threshold > 1 {
			add(fmt.Sprintf("%v: use a probability in (0, 1]", d.Threshold), "cameras", idx, "decision", "threshold")
		}
		if d.K < 1 || d.N < d.K || d.N > 100 {
			add(fmt.Sprintf("k=%d of n=%d: need 1 ≤ k ≤ n ≤ 100", d.K, d.N), "cameras", idx, "decision")
		}
		for l, th := range d.PerClass {
			if th <= 0 || th > 1 {
				add(fmt.Sprintf("%q: %v is not a probability", l, th), "cameras", idx, "decision", "per_class")
			}
		}
	}
	return probs
}

// DefaultConfigYAML is the documented example (systemd/leafwatchd.yaml).
func DefaultConfigYAML() string { return systemd.ExampleConfig }
