package samples

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/leafwatch/leafwatch/internal/fieldset"
)

// Label Studio's JSON task format (labelstud.io/guide/task_format and
// /guide/predictions): data, predictions with model_version and score
// (the Data Manager sorts by it), annotations for what is labelled. The
// labelling config has one Choices control named "label" on the image.

type lsTask struct {
	Data        lsData         `json:"data"`
	Predictions []lsPrediction `json:"predictions,omitempty"`
	Annotations []lsAnnotation `json:"annotations,omitempty"`
}

type lsData struct {
	Image    string `json:"image"`
	SampleID string `json:"sample_id"`
	Camera   string `json:"camera"`
	Time     string `json:"time"`
	Rules    string `json:"rules"`
}

type lsPrediction struct {
	ModelVersion string     `json:"model_version"`
	Score        float32    `json:"score"`
	Result       []lsResult `json:"result"`
}

type lsResult struct {
	FromName string  `json:"from_name"`
	ToName   string  `json:"to_name"`
	Type     string  `json:"type"`
	Value    lsValue `json:"value"`
}

type lsValue struct {
	Choices []string `json:"choices"`
}

type lsAnnotation struct {
	Result       []lsResult      `json:"result"`
	WasCancelled bool            `json:"was_cancelled,omitempty"`
	CompletedBy  json.RawMessage `json:"completed_by,omitempty"`
	UpdatedAt    string          `json:"updated_at,omitempty"`
	CreatedAt    string          `json:"created_at,omitempty"`
}

func choice(label string) []lsResult {
	return []lsResult{{FromName: "label", ToName: "image", Type: "choices", Value: lsValue{Choices: []string{label}}}}
}

func newTask(r fieldset.Record, imageURL string) lsTask {
	t := lsTask{Data: lsData{Image: imageURL, SampleID: r.ID, Camera: r.Camera, Time: r.Time.UTC().Format(time.RFC3339), Rules: strings.Join(r.Rules, ",")}}
	if len(r.Top) > 0 {
		t.Predictions = []lsPrediction{{ModelVersion: r.Model.Version, Score: r.Top[0].Prob, Result: choice(r.Top[0].Label)}}
	}
	if r.Label != "" {
		a := lsAnnotation{Result: choice(r.Label)}
		if r.LabelledAt != nil {
			a.UpdatedAt = r.LabelledAt.UTC().Format(time.RFC3339)
		}
		t.Annotations = []lsAnnotation{a}
	}
	return t
}

// labelConfig is the Label Studio labelling config for the labels.
func labelConfig(labels []string) []byte {
	var b bytes.Buffer
	b.WriteString("<View>\n  <Image name=\"image\" value=\"$image\"/>\n  <Choices name=\"label\" toName=\"image\" choice=\"single\" showInline=\"false\">\n")
	for _, l := range labels {
		b.WriteString("    <Choice value=\"")
		xml.EscapeText(&b, []byte(l))
		b.WriteString("\"/>\n")
	}
	b.WriteString("  </Choices>\n</View>\n")
	return b.Bytes()
}

// ImportReport says what an import did.
type ImportReport struct {
	Applied   int      `json:"applied"`   // labels written
	Unchanged int      `json:"unchanged"` // the sample had that label already
	Conflicts []string `json:"conflicts,omitempty"`
	Unknown   []string `json:"unknown_samples,omitempty"` // ids not in this store (evicted, or another device's)
	BadLabels []string `json:"bad_labels,omitempty"`      // "id: label" not among the labels allowed
	NoLabel   int      `json:"no_label"`                  // tasks without a usable annotation
	Batch     int64    `json:"batch,omitempty"`
}

// ImportLabelStudio reads a Label Studio JSON export (the tasks this
// store exported, annotated there) and applies each task's latest
// annotation as one labelling action of who ("labelstudio" by default),
// which Undo takes back whole. allowed are the labels people may give. A
// sample labelled differently here is a conflict and keeps its label
// unless overwrite.
func (s *Store) ImportLabelStudio(ctx context.Context, r io.Reader, allowed []string, who string, overwrite bool) (ImportReport, error) {
	var rep ImportReport
	var tasks []lsTask
	dec := json.NewDecoder(r)
	if err := dec.Decode(&tasks); err != nil {
		return rep, fmt.Errorf("import: not a Label Studio JSON export (a list of tasks): %w", err)
	}
	if who == "" {
		who = "labelstudio"
	}
	byLabel := map[string][]string{}
	var order []string
	for _, t := range tasks {
		id := t.Data.SampleID
		label, by := latestChoice(t.Annotations)
		if id == "" || label == "" {
			rep.NoLabel++
			continue
		}
		if !slices.Contains(allowed, label) || !fieldset.ValidLabel(label) {
			rep.BadLabels = append(rep.BadLabels, id+": "+label)
			continue
		}
		cur, err := s.Get(ctx, id)
		if err != nil {
			rep.Unknown = append(rep.Unknown, id)
			continue
		}
		switch {
		case cur.Label == label:
			rep.Unchanged++
			continue
		case cur.Label != "" && !overwrite:
			rep.Conflicts = append(rep.Conflicts, fmt.Sprintf("%s: here %q (by %s), Label Studio %q (by %s)", id, cur.Label, cur.LabelledBy, label, by))
			continue
		}
		if _, ok := byLabel[label]; !ok {
			order = append(order, label)
		}
		byLabel[label] = append(byLabel[label], id)
	}
	// One batch for the whole import: label each group, then merge batches.
	var first int64
	for _, l := range order {
		res, err := s.Label(ctx, byLabel[l], l, who, time.Now())
		if err != nil {
			return rep, err
		}
		if first == 0 {
			first = res.Batch
		} else if err := s.mergeBatch(ctx, res.Batch, first); err != nil {
			return rep, err
		}
		rep.Applied += res.Changed
	}
	rep.Batch = first
	return rep, nil
}

// mergeBatch folds batch from into batch into (one undo for an import).
func (s *Store) mergeBatch(ctx context.Context, from, into int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tx(ctx, func(tx txn) error {
		_, err := tx.ExecContext(ctx, `UPDATE label_log SET batch = ? WHERE batch = ?`, into, from)
		return err
	})
}

// latestChoice is the choice of the newest annotation not cancelled, and
// who made it.
func latestChoice(as []lsAnnotation) (label, by string) {
	best := ""
	for _, a := range as {
		if a.WasCancelled {
			continue
		}
		at := a.UpdatedAt
		if at == "" {
			at = a.CreatedAt
		}
		for _, r := range a.Result {
			if r.Type == "choices" && len(r.Value.Choices) > 0 && (label == "" || at >= best) {
				label, best, by = r.Value.Choices[0], at, completedBy(a.CompletedBy)
			}
		}
	}
	return label, by
}

// completedBy reads Label Studio's completed_by: a user id, or an object
// with an email.
func completedBy(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "labelstudio"
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return "labelstudio:" + n.String()
	}
	var o struct {
		Email string `json:"email"`
		ID    int    `json:"id"`
	}
	if json.Unmarshal(raw, &o) == nil {
		if o.Email != "" {
			return "labelstudio:" + o.Email
		}
		return "labelstudio:" + strconv.Itoa(o.ID)
	}
	return "labelstudio"
}
