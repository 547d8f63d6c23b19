package bundle

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// SignCheckpoint writes the checkpoint's manifest and its signature beside
// it (replacing earlier ones) and returns the manifest. What an existing
// manifest of the same checkpoint says beyond the file (finetune's
// evaluation, and the summary when summary is "") is kept.
func SignCheckpoint(s *Signer, checkpoint, summary string) (Manifest, error) {
	m, err := Describe(checkpoint, summary)
	if err != nil {
		return m, err
	}
	if b, err := os.ReadFile(ManifestPath(checkpoint)); err == nil {
		if old, err := ParseManifest(b); err == nil && old.SHA256 == m.SHA256 {
			m.Evaluation = old.Evaluation
			if summary == "" {
				m.Summary = old.Summary
			}
		}
	}
	text := m.Marshal()
	if err := WriteFileAtomic(ManifestPath(checkpoint), text, 0o644); err != nil {
		return m, err
	}
	if err := WriteFileAtomic(SignaturePath(checkpoint), s.Sign(text, m), 0o644); err != nil {
		return m, err
	}
	return m, nil
}

// WriteManifest writes an unsigned manifest beside a checkpoint (finetune
// train does, so that signing later only adds the signature).
func WriteManifest(checkpoint, summary string, eval map[string]Accuracy) (Manifest, error) {
	m, err := Describe(checkpoint, summary)
	if err != nil {
		return m, err
	}
	m.Evaluation = eval
	if err := WriteFileAtomic(ManifestPath(checkpoint), m.Marshal(), 0o644); err != nil {
		return m, err
	}
	// A signature of an earlier manifest would no longer match.
	if err := os.Remove(SignaturePath(checkpoint)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return m, err
	}
	return m, nil
}

// Signed is a manifest with its signature, as read.
type Signed struct {
	Manifest Manifest
	Text     []byte // the manifest's exact bytes (what the signature covers)
	Sig      []byte // minisign signature text; nil when unsigned
}

// ReadBeside reads the manifest and signature beside a checkpoint. A
// missing signature leaves Sig nil; a missing manifest is an error.
func ReadBeside(checkpoint string) (Signed, error) {
	var s Signed
	text, err := os.ReadFile(ManifestPath(checkpoint))
	if err != nil {
		return s, fmt.Errorf("no manifest beside %s: %w", checkpoint, err)
	}
	m, err := ParseManifest(text)
	if err != nil {
		return s, fmt.Errorf("%s: %w", ManifestPath(checkpoint), err)
	}
	s.Manifest, s.Text = m, text
	sig, err := os.ReadFile(SignaturePath(checkpoint))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return s, err
	}
	s.Sig = sig
	return s, nil
}

// Verify checks the signature with the ring. With allowUnsigned, a
// manifest without a signature passes (and the caller warns); a bad
// signature never does.
func (s Signed) Verify(ring *Keyring, allowUnsigned bool) (keyID string, err error) {
	if len(s.Sig) == 0 || (allowUnsigned && ring.Len() == 0) {
		if allowUnsigned {
			return "", nil
		}
		return "", ErrUnsigned
	}
	id, _, err := ring.Verify(s.Text, s.Sig)
	return id, err
}
