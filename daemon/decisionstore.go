package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// decisionStore keeps one camera's DecisionState in the state folder,
// written crash-safe (temporary file, fsync, rename, folder fsync), so a
// daemon killed during an alert continues it, or ends it, after a restart.
type decisionStore struct{ path string }

func openDecisionStore(stateDir, camera string) (*decisionStore, error) {
	dir := filepath.Join(stateDir, "decisions")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("decision state: %w", err)
	}
	return &decisionStore{path: filepath.Join(dir, camera+".json")}, nil
}

// load returns the saved state; ok is false when there is none. A file
// that does not parse is reported and set aside, never fatal.
func (s *decisionStore) load() (DecisionState, bool, error) {
	var st DecisionState
	b, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, false, nil
	}
	if err != nil {
		return st, false, fmt.Errorf("decision state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		os.Rename(s.path, s.path+".corrupt")
		return st, false, fmt.Errorf("decision state %s does not parse (moved aside): %w", s.path, err)
	}
	return st, true, nil
}

func (s *decisionStore) save(st DecisionState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	dir := filepath.Dir(s.path)
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("decision state: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("decision state: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("decision state: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("decision state: %w", err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("decision state: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
