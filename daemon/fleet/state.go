package fleet

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/leafwatch/leafwatch/internal/bundle"
)

// Update states.
const (
	StateIdle        = "idle"        // serving; nothing offered beyond it
	StateAvailable   = "available"   // offered, waiting for the install command (auto_install off)
	StateDownloading = "downloading" // update_percentage says how far
	StateVerifying   = "verifying"   // hash, size, labels; a test inference
	StateEvaluating  = "evaluating"  // both models on the labelled samples
	StateInstalled   = "installed"   // the offered model serves
	StateRefused     = "refused"     // not taken: reason says why
	StateRolledBack  = "rolled_back" // the previous model serves again
	StateFailed      = "failed"      // could not finish (download, disk); retried
)

// State is published retained on <prefix>/<device>/model/update. Its
// first six keys are Home Assistant's update entity's; the rest are
// attributes.
type State struct {
	InstalledVersion string   `json:"installed_version"`
	LatestVersion    string   `json:"latest_version"`
	Title            string   `json:"title"`
	ReleaseSummary   string   `json:"release_summary,omitempty"`
	InProgress       bool     `json:"in_progress"`
	UpdatePercentage *float64 `json:"update_percentage"`

	State           string      `json:"state"`
	Reason          string      `json:"reason,omitempty"`
	OfferedVersion  string      `json:"offered_version,omitempty"`
	PreviousVersion string      `json:"previous_version,omitempty"`
	Group           string      `json:"group"`
	Acceptance      *Acceptance `json:"acceptance,omitempty"`
	Time            time.Time   `json:"time"`
}

// Marshal is the state's payload.
func (s State) Marshal() []byte {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return b
}

// memory is what the updater remembers across restarts (state.json in its
// folder).
type memory struct {
	// Refused holds the checkpoints (by sha256) refused or rolled back,
	// with why: a retained announcement of one is not tried again by
	// itself (the install command does).
	Refused map[string]string `json:"refused,omitempty"`
	// Previous is what previous.safetensors holds, for rollback.
	Previous string `json:"previous,omitempty"` // version
	// Last is the last state published, published again at start.
	Last *State `json:"last,omitempty"`
}

func loadMemory(path string) (memory, error) {
	var m memory
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return memory{}, fmt.Errorf("%s: %w (starting with an empty update history)", path, err)
	}
	return m, nil
}

func (m memory) save(path string) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	return bundle.WriteFileAtomic(path, b, 0o640)
}
