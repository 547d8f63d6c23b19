package fleet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/leafwatch/leafwatch/internal/bundle"
)

// Announcement offers a model to a group (retained on
// <prefix>/fleet/<group>/model). The manifest travels whole, as the exact
// text its signature covers; version, sha256 and size repeat what it says
// so people and tools can read them without parsing it.
type Announcement struct {
	Version   string    `json:"version"`
	URL       string    `json:"url"`
	SHA256    string    `json:"sha256"`
	Size      int64     `json:"size"`
	Manifest  string    `json:"manifest"`
	Signature string    `json:"signature,omitempty"` // minisign text; empty when unsigned
	Published time.Time `json:"published"`
}

// maxAnnouncement bounds what is parsed: a manifest (≤ 64 kB) and a
// signature, as JSON strings.
const maxAnnouncement = 3 * bundle.MaxManifest

// ParseAnnouncement reads an announcement strictly. An empty payload is a
// withdrawal: it returns ok=false and no error.
func ParseAnnouncement(b []byte) (a Announcement, ok bool, err error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return a, false, nil
	}
	if len(b) > maxAnnouncement {
		return a, false, fmt.Errorf("announcement of %d bytes is larger than %d", len(b), maxAnnouncement)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		return a, false, fmt.Errorf("announcement is not the expected JSON: %w", err)
	}
	if dec.More() {
		return a, false, errors.New("announcement has trailing data")
	}
	u, err := url.Parse(a.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return a, false, fmt.Errorf("announcement url %q: need an http:// or https:// URL", a.URL)
	}
	if a.Manifest == "" {
		return a, false, errors.New("announcement has no manifest")
	}
	return a, true, nil
}

// Bundle is the announced manifest and signature, checked against the
// announcement's own fields (a mismatch means it was edited).
func (a Announcement) Bundle() (bundle.Signed, error) {
	m, err := bundle.ParseManifest([]byte(a.Manifest))
	if err != nil {
		return bundle.Signed{}, fmt.Errorf("announced manifest: %w", err)
	}
	if (a.SHA256 != "" && a.SHA256 != m.SHA256) || (a.Size != 0 && a.Size != m.Size) || (a.Version != "" && a.Version != m.Version) {
		return bundle.Signed{}, fmt.Errorf("announcement says version %s, %d bytes, sha256 %.12s…; its manifest says %s, %d bytes, %.12s…",
			a.Version, a.Size, a.SHA256, m.Version, m.Size, m.SHA256)
	}
	s := bundle.Signed{Manifest: m, Text: []byte(a.Manifest)}
	if strings.TrimSpace(a.Signature) != "" {
		s.Sig = []byte(a.Signature)
	}
	return s, nil
}

// Announce builds the announcement of the bundle beside a checkpoint,
// served at url. An unsigned bundle is refused unless allowUnsigned.
func Announce(checkpoint, url string, allowUnsigned bool, now time.Time) (Announcement, error) {
	s, err := bundle.ReadBeside(checkpoint)
	if err != nil {
		return Announcement{}, err
	}
	if len(s.Sig) == 0 && !allowUnsigned {
		return Announcement{}, fmt.Errorf("%s is not signed: run finetune sign first (devices refuse unsigned models unless allow_unsigned)", checkpoint)
	}
	if err := s.Manifest.CheckCheckpoint(checkpoint); err != nil {
		return Announcement{}, fmt.Errorf("the manifest beside %s no longer matches it: %w (sign it again)", checkpoint, err)
	}
	a := Announcement{Version: s.Manifest.Version, URL: url, SHA256: s.Manifest.SHA256, Size: s.Manifest.Size,
		Manifest: string(s.Text), Signature: string(s.Sig), Published: now.UTC().Truncate(time.Second)}
	if _, _, err := ParseAnnouncement(a.Marshal()); err != nil {
		return a, err
	}
	return a, nil
}

// Marshal is the announcement's payload.
func (a Announcement) Marshal() []byte {
	b, err := json.Marshal(a)
	if err != nil {
		panic(err) // strings and numbers always marshal
	}
	return b
}
