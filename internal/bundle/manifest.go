// Package bundle owns what travels with a model from the machine that
// trained it to the devices that serve it: the manifest that describes a
// checkpoint (its hash, size, classes and training figures), the detached
// signature over that manifest, and the keys that make and check it.
//
// Signatures use the minisign format (Ed25519, aead.dev/minisign): the
// files are the ones minisign(1) writes and verifies, so an operator can
// check a bundle by hand (`minisign -Vm model.safetensors.manifest.json -p
// release.pub`) with a tool Debian packages, and no Leafwatch-specific
// key format has to be kept. The checkpoint itself is not signed: the
// manifest carries its SHA-256, so checking the hash of 228 MB happens once,
// where the file is read anyway.
package bundle

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/leafwatch/leafwatch/model"
)

// Format names a Leafwatch manifest.
const (
	Format        = "leafwatch-model"
	FormatVersion = 1
)

// MaxManifest bounds a manifest: one lists 38 labels and a training
// summary in a few kB; an announcement carries it over MQTT.
const MaxManifest = 64 << 10

// MaxSummary is the longest release summary (Home Assistant shows at most
// 255 characters of it).
const MaxSummary = 255

// Manifest describes one checkpoint.
type Manifest struct {
	Format        string `json:"format"`
	FormatVersion int    `json:"format_version"`
	// Version is the checkpoint's version as leafwatchd reports it: the
	// start of its SHA-256.
	Version string `json:"version"`
	// File is the checkpoint's name when the manifest was written (for
	// people; a renamed file still verifies by its hash).
	File   string `json:"file"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`

	Variant      string   `json:"variant"`
	InputSize    int      `json:"input_size"`
	Labels       []string `json:"labels"`
	LabelsSHA256 string   `json:"labels_sha256"`

	Created time.Time `json:"created"`
	// Summary is a line for people (the update entity's release summary).
	Summary  string                 `json:"release_summary,omitempty"`
	Training *model.TrainingSummary `json:"training,omitempty"`
	// Evaluation is the accuracy per source of images as finetune
	// measured it: "plantvillage_val", "field_val", "field_test" (the
	// greenhouse's baseline samples, the honest field figure).
	Evaluation map[string]Accuracy `json:"evaluation,omitempty"`
}

// Accuracy is one evaluation.
type Accuracy struct {
	Accuracy float64 `json:"accuracy"`
	Samples  int     `json:"samples"`
}

// ManifestPath is where a checkpoint's manifest lives: beside it.
func ManifestPath(checkpoint string) string { return checkpoint + ".manifest.json" }

// SignaturePath is where a manifest's signature lives: beside it, with
// minisign's suffix.
func SignaturePath(checkpoint string) string { return ManifestPath(checkpoint) + ".minisig" }

// LabelsHash is the SHA-256 of the labels, one per line, in output order.
func LabelsHash(labels []string) string {
	h := sha256.Sum256([]byte(strings.Join(labels, "\n")))
	return hex.EncodeToString(h[:])
}

// Describe reads a checkpoint (its header for the classes, all of it for
// the hash) and returns its manifest.
func Describe(checkpoint, summary string) (Manifest, error) {
	if len(summary) > MaxSummary {
		return Manifest{}, fmt.Errorf("the release summary is %d characters; at most %d", len(summary), MaxSummary)
	}
	meta, err := model.ReadMetadata(checkpoint)
	if err != nil {
		return Manifest{}, err
	}
	sum, size, err := HashFile(checkpoint)
	if err != nil {
		return Manifest{}, err
	}
	return Manifest{
		Format: Format, FormatVersion: FormatVersion,
		Version: sum[:12], File: filepath.Base(checkpoint), SHA256: sum, Size: size,
		Variant: string(meta.Variant), InputSize: meta.InputSize,
		Labels: meta.Labels, LabelsSHA256: LabelsHash(meta.Labels),
		Created: time.Now().UTC().Truncate(time.Second), Summary: summary, Training: meta.Training,
	}, nil
}

// HashFile returns a file's SHA-256 (hex) and size.
func HashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return "", 0, fmt.Errorf("%s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// Marshal is the manifest's text, as signed: indented JSON with a final
// newline (people read it).
func (m Manifest) Marshal() []byte {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		panic(fmt.Sprintf("bundle: manifest does not marshal: %v", err)) // plain fields always do
	}
	return append(b, '\n')
}

// ParseManifest reads a manifest strictly: known fields only, the format
// named, every field a checkpoint needs present and consistent.
func ParseManifest(b []byte) (Manifest, error) {
	var m Manifest
	if len(b) > MaxManifest {
		return m, fmt.Errorf("manifest of %d bytes is larger than %d", len(b), MaxManifest)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return m, fmt.Errorf("manifest is not valid JSON of a Leafwatch manifest: %w", err)
	}
	if dec.More() {
		return m, errors.New("manifest has data after its JSON object")
	}
	switch {
	case m.Format != Format:
		return m, fmt.Errorf("manifest format %q, want %q", m.Format, Format)
	case m.FormatVersion != FormatVersion:
		return m, fmt.Errorf("manifest format version %d; this leafwatchd reads %d (upgrade it)", m.FormatVersion, FormatVersion)
	case len(m.SHA256) != 64 || !isHex(m.SHA256):
		return m, fmt.Errorf("manifest sha256 %q is not 64 hex digits", m.SHA256)
	case m.Version != m.SHA256[:12]:
		return m, fmt.Errorf("manifest version %q is not the start of its sha256", m.Version)
	case m.Size <= 0:
		return m, fmt.Errorf("manifest size %d is not a size", m.Size)
	case len(m.Labels) == 0:
		return m, errors.New("manifest lists no labels")
	case m.LabelsSHA256 != LabelsHash(m.Labels):
		return m, errors.New("manifest labels_sha256 does not match its labels")
	case len(m.Summary) > MaxSummary:
		return m, fmt.Errorf("manifest release summary is longer than %d characters", MaxSummary)
	}
	if _, err := model.ParseVariant(m.Variant); err != nil {
		return m, fmt.Errorf("manifest: %w", err)
	}
	return m, nil
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// CheckCheckpoint checks a checkpoint file against the manifest: size,
// SHA-256, and the classes its header declares. It reads the whole file.
func (m Manifest) CheckCheckpoint(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.Size() != m.Size {
		return fmt.Errorf("%s is %d bytes; the manifest says %d", filepath.Base(path), st.Size(), m.Size)
	}
	sum, _, err := HashFile(path)
	if err != nil {
		return err
	}
	if sum != m.SHA256 {
		return fmt.Errorf("%s has SHA-256 %s…; the manifest says %s… (the file was changed or damaged)", filepath.Base(path), sum[:12], m.SHA256[:12])
	}
	return m.CheckMetadata(path)
}

// CheckMetadata checks the classes, variant and input size a checkpoint's
// header declares against the manifest (its hash is checked elsewhere).
func (m Manifest) CheckMetadata(path string) error {
	meta, err := model.ReadMetadata(path)
	if err != nil {
		return err
	}
	return m.CheckMeta(meta)
}

// CheckMeta compares a loaded checkpoint's metadata with the manifest.
func (m Manifest) CheckMeta(meta model.Metadata) error {
	if !slices.Equal(meta.Labels, m.Labels) {
		return fmt.Errorf("the checkpoint's %d labels differ from the manifest's %d", len(meta.Labels), len(m.Labels))
	}
	if string(meta.Variant) != m.Variant || meta.InputSize != m.InputSize {
		return fmt.Errorf("the checkpoint is %s at %d px; the manifest says %s at %d px", meta.Variant, meta.InputSize, m.Variant, m.InputSize)
	}
	if meta.SHA256 != "" && meta.SHA256 != m.SHA256 {
		return fmt.Errorf("the checkpoint has SHA-256 %s…; the manifest says %s…", meta.SHA256[:12], m.SHA256[:12])
	}
	return nil
}

// WriteFileAtomic writes data to path through a synced temporary file in
// the same folder, renamed into place.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
