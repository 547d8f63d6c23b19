// Package fieldset owns the exported field data set: the folder that
// `leafwatchd samples export` (and GET /samples/export) writes and that
// finetune reads — one record per kept sample in samples.jsonl, the
// labelled images in one folder per label, the rest in _unlabelled/.
// The daemon writes it, finetune reads it; neither imports the other.
package fieldset

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// File names inside an export folder.
const (
	RecordsFile   = "samples.jsonl"
	UnlabelledDir = "_unlabelled" // unlabelled and "unsure" samples: not a class
	LabelStudio   = "label-studio"
)

// Labels a person can give besides the model's classes.
const (
	// NotALeaf marks a region with no leaf in it (soil, a pot, a stem):
	// exported as a class of its own; finetune trains it when asked
	// (--reject-class) and the daemon never alerts on it.
	NotALeaf = "not_a_leaf"
	// Unsure marks a sample the person could not label: kept, never
	// exported for training.
	Unsure = "unsure"
)

// The keep rules that can fire for a region.
const (
	RuleUncertain = "uncertain"  // below the camera's threshold ("Not sure")
	RuleCloseCall = "close_call" // top-1 near top-2, or near the threshold
	RuleDisagree  = "disagree"   // the frame's regions disagree
	RuleAlert     = "alert"      // a frame that started or ended an alert
	RuleBaseline  = "baseline"   // kept at random, whatever the model said
)

// Rules lists every keep rule.
var Rules = []string{RuleUncertain, RuleCloseCall, RuleDisagree, RuleAlert, RuleBaseline}

// Scored is a class and its probability.
type Scored struct {
	Label string  `json:"label"`
	Prob  float32 `json:"prob"`
}

// Preprocess is how the region became the model's input.
type Preprocess struct {
	InputSize int        `json:"input_size"`
	Resize    int        `json:"resize"`
	Mean      [3]float32 `json:"mean"`
	Std       [3]float32 `json:"std"`
	Regions   string     `json:"regions"` // how the frame was cut: tiles, leaves, frame
	Tiling    string     `json:"tiling,omitempty"`
}

// ModelRef names the model that classified the region.
type ModelRef struct {
	Version   string `json:"version"`
	SHA256    string `json:"sha256,omitempty"`
	Engine    string `json:"engine"`
	Precision string `json:"precision,omitempty"`
}

// Record is one kept sample: what the model saw and said, and its label.
type Record struct {
	ID         string     `json:"id"`
	Camera     string     `json:"camera"`
	Time       time.Time  `json:"time"` // UTC, when the frame was captured
	Day        string     `json:"day"`  // Time's UTC date: with Camera, the unit a split keeps together
	FrameID    string     `json:"frame_id"`
	FrameSize  [2]int     `json:"frame_size"` // width, height of the source frame
	Box        [4]int     `json:"box"`        // x, y, width, height in the source frame
	Region     string     `json:"region"`     // frame, tile or leaf
	Preprocess Preprocess `json:"preprocess"`
	Threshold  float32    `json:"threshold"` // the camera's threshold for the top class then
	Model      ModelRef   `json:"model"`
	Top        []Scored   `json:"top"` // up to 5, best first
	Rules      []string   `json:"rules"`
	Label      string     `json:"label,omitempty"`
	LabelledBy string     `json:"labelled_by,omitempty"`
	LabelledAt *time.Time `json:"labelled_at,omitempty"`
	// Image is the region's JPEG, relative to the export folder.
	Image  string `json:"image,omitempty"`
	SHA256 string `json:"sha256,omitempty"` // of Image's bytes
}

// Predicted is the model's top class ("" when it listed none).
func (r Record) Predicted() string {
	if len(r.Top) == 0 {
		return ""
	}
	return r.Top[0].Label
}

// Trainable reports whether a record is labelled with a class to learn.
func (r Record) Trainable() bool { return r.Label != "" && r.Label != Unsure }

// Baseline reports whether the record was kept at random (the baseline
// rule): those samples are an unbiased picture of what the camera sees.
func (r Record) Baseline() bool {
	for _, x := range r.Rules {
		if x == RuleBaseline {
			return true
		}
	}
	return false
}

// IsExport reports whether dir is an export folder (it has samples.jsonl).
func IsExport(dir string) bool {
	st, err := os.Stat(filepath.Join(dir, RecordsFile))
	return err == nil && st.Mode().IsRegular()
}

// ReadRecords reads samples.jsonl. A line that is not a record is an
// error naming its line: a half-copied export must not train silently on
// less than it holds.
func ReadRecords(r io.Reader) ([]Record, error) {
	var out []Record
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var rec Record
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", RecordsFile, n, err)
		}
		if rec.ID == "" || rec.Camera == "" || rec.Time.IsZero() {
			return nil, fmt.Errorf("%s line %d: a record needs id, camera and time", RecordsFile, n)
		}
		out = append(out, rec)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", RecordsFile, err)
	}
	return out, nil
}

// Load reads an export folder's records; every trainable record's image
// must exist (path checked, not decoded).
func Load(dir string) ([]Record, error) {
	f, err := os.Open(filepath.Join(dir, RecordsFile))
	if err != nil {
		return nil, fmt.Errorf("field data %s: %w", dir, err)
	}
	defer f.Close()
	recs, err := ReadRecords(f)
	if err != nil {
		return nil, fmt.Errorf("field data %s: %w", dir, err)
	}
	var missing []string
	for _, r := range recs {
		if !r.Trainable() {
			continue
		}
		if r.Image == "" || !filepath.IsLocal(r.Image) {
			return nil, fmt.Errorf("field data %s: sample %s has no usable image path %q", dir, r.ID, r.Image)
		}
		if _, err := os.Stat(filepath.Join(dir, r.Image)); err != nil {
			missing = append(missing, r.Image)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("field data %s: %d labelled images are missing (first: %s); export again or pull again", dir, len(missing), missing[0])
	}
	return recs, nil
}

// ErrNoRecords is returned when a folder holds no samples.jsonl.
var ErrNoRecords = errors.New("not a Leafwatch export (no " + RecordsFile + ")")

// ClassFolder is the folder an exported label's images go in: the label
// itself, which is a file name already (PlantVillage names, not_a_leaf);
// anything else is refused by the daemon before it is stored.
func ClassFolder(label string) string { return label }

// ValidLabel reports whether a label can name a class folder: non-empty,
// no path separators or dot names, no leading '_' or '.' (those folders
// are not classes), printable.
func ValidLabel(l string) bool {
	if l == "" || len(l) > 120 || l == "." || l == ".." || strings.ContainsAny(l, "/\\\x00") {
		return false
	}
	if strings.HasPrefix(l, "_") || strings.HasPrefix(l, ".") {
		return false
	}
	for _, r := range l {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}
