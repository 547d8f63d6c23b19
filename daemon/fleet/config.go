// Package fleet owns taking new models from a fleet announcement: the
// retained message a group of devices shares, the download into the state
// directory, the checks (signature, hash, size, labels), acceptance on the
// device's own labelled samples, installation with the previous model
// kept, rollback (by command, or by itself after an engine failure soon
// after an install), and the update state people and Home Assistant see.
// The daemon provides the models (Host); nothing here knows engines.
package fleet

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/leafwatch/leafwatch/internal/bundle"
	"github.com/leafwatch/leafwatch/mqtt"
)

// Config is the models: section of leafwatchd's config.
type Config struct {
	// TrustedKeys are minisign public key files; a bundle must be signed
	// by one of them.
	TrustedKeys []string `yaml:"trusted_keys"`
	// AllowUnsigned takes unsigned bundles (a lab without keys); warned
	// about at every start.
	AllowUnsigned bool `yaml:"allow_unsigned"`
	// Local is how a checkpoint renamed into place is treated: "trusted"
	// (the operator is; as before) or "signed" (it needs a manifest and a
	// signature beside it, as a fleet bundle does).
	Local string `yaml:"local"`
	// Tolerance is how many accuracy points the candidate may be below
	// the serving model on the labelled samples and still be taken.
	Tolerance float64 `yaml:"tolerance"`
	// MinSamples is the fewest labelled samples that make a comparison;
	// with fewer, WithoutSamples decides.
	MinSamples int `yaml:"min_samples"`
	// WithoutSamples: "install" takes a candidate when too few samples are
	// labelled to compare (and says so), "refuse" does not.
	WithoutSamples string `yaml:"without_samples"`
	// AutoInstall installs an announced model by itself; off, it waits
	// for the install command (Home Assistant's Install button).
	AutoInstall bool `yaml:"auto_install"`
	// RollbackWindow is how long after an install an engine failure rolls
	// back to the previous model by itself.
	RollbackWindow time.Duration `yaml:"rollback_window"`
	// MaxMB refuses a larger download.
	MaxMB int `yaml:"max_mb"`
	// CAFile verifies HTTPS model servers with these CAs instead of the
	// system's.
	CAFile string `yaml:"ca_file"`
}

// Group is the fleet: section.
type Group struct {
	// Group is the announcement topic's group: <prefix>/fleet/<group>/model.
	Group string `yaml:"group"`
}

// Local deployment modes.
const (
	LocalTrusted = "trusted"
	LocalSigned  = "signed"
)

// DefaultConfig is the models: section's defaults.
func DefaultConfig() Config {
	return Config{Local: LocalTrusted, MinSamples: 20, WithoutSamples: "install", AutoInstall: true,
		RollbackWindow: 10 * time.Minute, MaxMB: 1024}
}

// Validate lists every problem.
func (c Config) Validate() error {
	var errs []error
	for _, k := range c.TrustedKeys {
		if _, err := bundle.LoadKeyring([]string{k}); err != nil {
			errs = append(errs, fmt.Errorf("trusted_keys: %w", err))
		}
	}
	if c.Local != LocalTrusted && c.Local != LocalSigned {
		errs = append(errs, fmt.Errorf("local: %q: use trusted or signed", c.Local))
	}
	if c.Local == LocalSigned && len(c.TrustedKeys) == 0 && !c.AllowUnsigned {
		errs = append(errs, errors.New("local: signed needs trusted_keys"))
	}
	if !(c.Tolerance >= 0 && c.Tolerance <= 100) {
		errs = append(errs, fmt.Errorf("tolerance: %v: use 0..100 accuracy points", c.Tolerance))
	}
	if c.MinSamples < 1 || c.MinSamples > 100000 {
		errs = append(errs, fmt.Errorf("min_samples: %d: use 1..100000", c.MinSamples))
	}
	if c.WithoutSamples != "install" && c.WithoutSamples != "refuse" {
		errs = append(errs, fmt.Errorf("without_samples: %q: use install or refuse", c.WithoutSamples))
	}
	if c.RollbackWindow < 0 || c.RollbackWindow > 24*time.Hour {
		errs = append(errs, fmt.Errorf("rollback_window: %v: use 0..24h", c.RollbackWindow))
	}
	if c.MaxMB < 16 {
		errs = append(errs, fmt.Errorf("max_mb: %d: use at least 16", c.MaxMB))
	}
	if c.CAFile != "" {
		if _, err := os.Stat(c.CAFile); err != nil {
			errs = append(errs, fmt.Errorf("ca_file: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Validate checks the group name.
func (g Group) Validate() error {
	if !mqtt.ValidName(g.Group) {
		return fmt.Errorf("group: %q: use letters, digits, '_' or '-'", g.Group)
	}
	return nil
}
