package mqtt

import "time"

// Topics builds every topic of one device. See the README's MQTT section.
type Topics struct{ base string }

// NewTopics returns the topic scheme under <prefix>/<device>.
func NewTopics(prefix, device string) Topics { return Topics{prefix + "/" + device} }

func (t Topics) Availability() string           { return t.base + "/availability" }
func (t Topics) Stats() string                  { return t.base + "/stats" }
func (t Topics) Model() string                  { return t.base + "/model" }
func (t Topics) Samples() string                { return t.base + "/samples" }
func (t Topics) State(camera string) string     { return t.base + "/" + camera + "/state" }
func (t Topics) Alert(camera string) string     { return t.base + "/" + camera + "/alert" }
func (t Topics) Thumbnail(camera string) string { return t.base + "/" + camera + "/thumbnail" }
func (t Topics) Command(name string) string     { return t.base + "/cmd/" + name }
func (t Topics) CommandFilter() string          { return t.base + "/cmd/+" }
func (t Topics) Result() string                 { return t.base + "/cmd_result" }

// Update is the device's model update state (retained): installed and
// offered versions, progress, the acceptance figures.
func (t Topics) Update() string { return t.base + "/model/update" }

// FleetModel is where a model is announced (retained) to every device of a
// group: <prefix>/fleet/<group>/model.
func FleetModel(prefix, group string) string { return prefix + "/fleet/" + group + "/model" }

// Availability payloads.
const (
	Online  = "online"
	Offline = "offline"
)

// Scored is one class and its probability.
type Scored struct {
	Label string  `json:"label"`
	Prob  float32 `json:"prob"`
}

// TileResult is the prediction for one tile of a tiled frame.
type TileResult struct {
	Box        [4]int  `json:"box"` // x, y, width, height in frame pixels
	Label      string  `json:"label"`
	Confidence float32 `json:"confidence"`
}

// RegionResult is the prediction for one region of a frame: a leaf, a
// tile, or the whole frame.
type RegionResult struct {
	Box        [4]int  `json:"box"`  // x, y, width, height in frame pixels
	Kind       string  `json:"kind"` // leaf, tile or frame
	Label      string  `json:"label"`
	Confidence float32 `json:"confidence"`
}

// Classification is a camera's latest result, published retained.
type Classification struct {
	Camera     string         `json:"camera"`
	Label      string         `json:"label"`           // "uncertain" below the threshold
	Display    string         `json:"display"`         // human-readable label
	Confidence float32        `json:"confidence"`      // of the best class
	Disease    bool           `json:"disease"`         // an alert is active for this camera
	Top        []Scored       `json:"top"`             // best first
	Tiles      []TileResult   `json:"tiles,omitempty"` // tiles mode only (kept for existing dashboards); Regions holds every mode
	Regions    []RegionResult `json:"regions,omitempty"`
	Model      string         `json:"model_version"`
	FrameTime  time.Time      `json:"frame_time"`
}

// Alert phases.
const (
	AlertStart = "start"
	AlertEnd   = "end"
)

// Alert is a decided disease event (QoS 1, not retained). A start and its
// end share EventID; subscribers drop duplicates by (EventID, Phase).
type Alert struct {
	EventID    string    `json:"event_id"`
	Phase      string    `json:"phase"` // start | end
	Camera     string    `json:"camera"`
	Label      string    `json:"label"`
	Display    string    `json:"display"`
	Confidence float32   `json:"confidence"`
	Start      time.Time `json:"start"`
	End        time.Time `json:"end,omitzero"`
	Snapshot   string    `json:"snapshot,omitempty"` // path on the device
	Model      string    `json:"model_version"`
	// Reason says why an alert ended: "healthy" (k of n samples healthy
	// again), "replaced" (another disease took over) or "stale" (the
	// device was down too long to continue it after a restart).
	Reason string `json:"reason,omitempty"`
}

// Stats is the periodic health message.
type Stats struct {
	Uptime        float64            `json:"uptime_s"`
	FPS           map[string]float64 `json:"fps"` // per camera
	InferenceMS   float64            `json:"inference_ms"`
	QueueDrops    uint64             `json:"queue_drops"`
	OutboxDepth   int                `json:"outbox_depth"`
	OutboxDropped uint64             `json:"outbox_dropped"`
	Model         string             `json:"model_version"`
	Engine        string             `json:"engine"`
	CameraState   map[string]string  `json:"camera_state"`
}

// SamplesState is how many kept samples wait for a label, published
// retained on <prefix>/<device>/samples when it changes.
type SamplesState struct {
	Waiting  int    `json:"waiting"`  // unlabelled
	Labelled int    `json:"labelled"` // labelled with a class ("unsure" not counted)
	Total    int    `json:"total"`
	URL      string `json:"label_url"` // the labelling page
	// Full: labelled samples fill samples.max_mb and keeping has stopped.
	Full bool `json:"budget_full,omitempty"`
}

// ModelInfo describes the model serving, published retained on
// <prefix>/<device>/model at start and after every reload.
type ModelInfo struct {
	Version string   `json:"model_version"`
	Variant string   `json:"variant"`
	Labels  []string `json:"labels"`
	Engine  string   `json:"engine"`
	// LabelsChanged is set when a reload brought a different class set:
	// dashboards keyed on labels must be updated.
	LabelsChanged bool      `json:"labels_changed,omitempty"`
	Loaded        time.Time `json:"loaded"`
}
