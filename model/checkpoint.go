package model

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"time"
	"unsafe"

	"github.com/nlpodyssey/safetensors"
)

// FormatVersion is the checkpoint format this code writes and reads.
const FormatVersion = 1

// FormatName marks a safetensors file as a Leafwatch checkpoint.
const FormatName = "leafwatch-alexnet"

// ErrNotCheckpoint is wrapped by every "this is not a usable checkpoint" error.
var ErrNotCheckpoint = errors.New("invalid checkpoint")

// Metadata travels inside a checkpoint: everything the daemon needs besides
// the tensors.
type Metadata struct {
	FormatVersion int
	Variant       Variant
	Labels        []string // class labels in output order
	InputSize     int
	// Resize is the shorter side an image is scaled to before the centre
	// crop of InputSize; 0 means the whole frame is resized to InputSize.
	Resize    int
	Mean, Std [3]float32 // per RGB channel, on 0..1 pixel values
	Created   time.Time
	Source    string           // where the weights came from
	Training  *TrainingSummary // nil for imported or random weights
	// Version identifies the weights: a hash of the file they were loaded
	// from (empty until saved or loaded).
	Version string
}

// TrainingSummary records how a checkpoint was trained.
type TrainingSummary struct {
	Dataset        string            `json:"dataset"`
	TrainImages    int               `json:"train_images"`
	ValImages      int               `json:"val_images"`
	Epochs         int               `json:"epochs"`
	BatchSize      int               `json:"batch_size"`
	ValAccuracy    float64           `json:"val_accuracy"`
	ValMacroF1     float64           `json:"val_macro_f1"`
	Recipe         map[string]string `json:"recipe,omitempty"`
	FinishedAt     time.Time         `json:"finished_at"`
	BaseCheckpoint string            `json:"base_checkpoint,omitempty"`
}

// DefaultMetadata has the ImageNet preprocessing a variant expects.
func DefaultMetadata(v Variant) Metadata {
	md := Metadata{FormatVersion: FormatVersion, Variant: v, Created: time.Now().UTC().Truncate(time.Second)}
	switch v {
	case BVLC:
		// Caffe subtracts the ImageNet mean on 0..255 values and does not
		// scale: std 1/255 on 0..1 values is the same arithmetic.
		md.InputSize, md.Resize = 227, 256
		md.Mean = [3]float32{122.68 / 255, 116.67 / 255, 104.01 / 255}
		md.Std = [3]float32{1.0 / 255, 1.0 / 255, 1.0 / 255}
	default:
		md.InputSize, md.Resize = 224, 256
		md.Mean = [3]float32{0.485, 0.456, 0.406}
		md.Std = [3]float32{0.229, 0.224, 0.225}
	}
	return md
}

// F32View exposes a float32 tensor to the safetensors writer without copying.
type F32View struct {
	shape []uint64
	data  []float32
}

// ViewOf returns a safetensors view of data with the given shape.
func ViewOf(shape []int, data []float32) F32View {
	s := make([]uint64, len(shape))
	for i, d := range shape {
		s[i] = uint64(d)
	}
	return F32View{s, data}
}

func (v F32View) DType() safetensors.DType { return safetensors.F32 }
func (v F32View) Shape() []uint64          { return v.shape }
func (v F32View) DataLen() uint64          { return uint64(len(v.data)) * 4 }
func (v F32View) Data() []byte {
	if len(v.data) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v.data[0])), len(v.data)*4)
}

func (m *Model) headerMetadata() (map[string]string, error) {
	labels, err := json.Marshal(m.Meta.Labels)
	if err != nil {
		return nil, err
	}
	mean, _ := json.Marshal(m.Meta.Mean)
	std, _ := json.Marshal(m.Meta.Std)
	md := map[string]string{
		"format":         FormatName,
		"format_version": strconv.Itoa(FormatVersion),
		"variant":        string(m.Spec.Variant),
		"labels":         string(labels),
		"input_size":     strconv.Itoa(m.Spec.InputSize),
		"resize":         strconv.Itoa(m.Meta.Resize),
		"mean":           string(mean),
		"std":            string(std),
		"created":        m.Meta.Created.UTC().Format(time.RFC3339),
		"source":         m.Meta.Source,
	}
	if m.Meta.Training != nil {
		t, err := json.Marshal(m.Meta.Training)
		if err != nil {
			return nil, err
		}
		md["training"] = string(t)
	}
	return md, nil
}

// Save writes the checkpoint atomically: to a temporary file in the same
// folder, synced, then renamed over path, so a power cut leaves either the
// old or the new file, never half of one.
func (m *Model) Save(path string) error {
	md, err := m.headerMetadata()
	if err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	views := make(map[string]F32View, len(m.Params))
	for name, t := range m.Params {
		views[name] = ViewOf(t.Shape, t.Data)
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("save checkpoint: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	h := sha256.New()
	w := &teeWriter{f, h}
	if err := safetensors.SerializeToWriter(views, md, w); err != nil {
		f.Close()
		return fmt.Errorf("save %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("save %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	m.Meta.Version = hex.EncodeToString(h.Sum(nil))[:12]
	return nil
}

type teeWriter struct {
	f interface{ Write([]byte) (int, error) }
	h interface{ Write([]byte) (int, error) }
}

func (t *teeWriter) Write(p []byte) (int, error) {
	t.h.Write(p)
	return t.f.Write(p)
}

// Load reads a checkpoint file. The file is memory-mapped where the OS
// allows it, so the 230 MB of weights are copied once, not twice.
func Load(path string) (*Model, error) {
	buf, release, err := mapFile(path)
	if err != nil {
		return nil, fmt.Errorf("load checkpoint: %w", err)
	}
	defer release()
	m, err := Decode(buf)
	if err != nil {
		return nil, fmt.Errorf("load checkpoint %s: %w", path, err)
	}
	return m, nil
}

// maxHeader bounds the JSON header; a Leafwatch header is a few kB and the
// safetensors reference implementation refuses more than 100 MB.
const maxHeader = 100 << 20

// Decode parses a whole checkpoint held in memory.
func Decode(buf []byte) (*Model, error) {
	if len(buf) < 10 {
		return nil, fmt.Errorf("%w: %d bytes is too short to be a safetensors file", ErrNotCheckpoint, len(buf))
	}
	n := binary.LittleEndian.Uint64(buf[:8])
	if n > maxHeader || buf[8] != '{' {
		return nil, fmt.Errorf("%w: not a safetensors file (no JSON header after the 8-byte length)", ErrNotCheckpoint)
	}
	if n > uint64(len(buf)-8) {
		return nil, fmt.Errorf("%w: truncated file: header claims %d bytes, only %d follow", ErrNotCheckpoint, n, len(buf)-8)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(buf[8:8+n], &raw); err != nil {
		return nil, fmt.Errorf("%w: not a safetensors file: header is not JSON: %v", ErrNotCheckpoint, err)
	}
	// Check the data size before the library does, to say "truncated"
	// rather than a generic mismatch.
	var need uint64
	for name, r := range raw {
		if name == "__metadata__" {
			continue
		}
		var ti struct {
			Offsets []uint64 `json:"data_offsets"`
		}
		if json.Unmarshal(r, &ti) == nil && len(ti.Offsets) == 2 && ti.Offsets[1] > need {
			need = ti.Offsets[1]
		}
	}
	if have := uint64(len(buf)) - 8 - n; need > have {
		return nil, fmt.Errorf("%w: truncated file: tensors need %d bytes of data, %d present", ErrNotCheckpoint, need, have)
	}
	st, err := safetensors.Deserialize(buf)
	if err != nil {
		return nil, fmt.Errorf("%w: safetensors: %v", ErrNotCheckpoint, err)
	}
	_, hdr, err := safetensors.ReadMetadata(buf)
	if err != nil {
		return nil, fmt.Errorf("%w: safetensors: %v", ErrNotCheckpoint, err)
	}
	meta, err := parseHeaderMetadata(hdr.Metadata())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotCheckpoint, err)
	}
	spec, err := NewSpec(meta.Variant, len(meta.Labels))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotCheckpoint, err)
	}
	if meta.InputSize != spec.InputSize {
		return nil, fmt.Errorf("%w: input size %d, the %s variant takes %d", ErrNotCheckpoint, meta.InputSize, spec.Variant, spec.InputSize)
	}
	// Shapes are checked against the spec before any tensor is copied, so
	// a hostile header cannot make us allocate more than the file holds.
	want, err := spec.Params()
	if err != nil {
		return nil, err
	}
	wantShape := map[string]ParamShape{}
	for _, p := range want {
		wantShape[p.Name] = p
	}
	names := st.Names()
	for _, name := range names {
		if _, ok := wantShape[name]; !ok {
			return nil, fmt.Errorf("%w: extra tensor %q is not part of the %s AlexNet", ErrNotCheckpoint, name, spec.Variant)
		}
	}
	params := make(map[string]*Tensor, len(want))
	for _, p := range want {
		tv, ok := st.Tensor(p.Name)
		if !ok {
			return nil, fmt.Errorf("%w: missing tensor %q (%s)", ErrNotCheckpoint, p.Name, spec.Layers[p.Layer].Group)
		}
		shape := make([]int, len(tv.Shape()))
		for i, d := range tv.Shape() {
			shape[i] = int(d)
		}
		if !sameShape(shape, p.Shape) {
			return nil, fmt.Errorf("%w: tensor %q has shape %v, expected %v for %d classes", ErrNotCheckpoint, p.Name, tv.Shape(), p.Shape, spec.Classes)
		}
		if tv.DType() != safetensors.F32 {
			return nil, fmt.Errorf("%w: tensor %q is %v, checkpoints hold F32", ErrNotCheckpoint, p.Name, tv.DType())
		}
		t := &Tensor{Shape: shape, Data: make([]float32, numel(shape))}
		src := tv.Data()
		for i := range t.Data {
			t.Data[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
		params[p.Name] = t
	}
	h := sha256.Sum256(buf)
	meta.Version = hex.EncodeToString(h[:])[:12]
	return New(spec, params, meta)
}

func parseHeaderMetadata(md map[string]string) (Metadata, error) {
	if md == nil {
		return Metadata{}, errors.New("no __metadata__: a safetensors file, but not a Leafwatch checkpoint (import it with `finetune import`)")
	}
	if f := md["format"]; f != FormatName {
		return Metadata{}, fmt.Errorf("format %q is not %q: a safetensors file, but not a Leafwatch checkpoint (import it with `finetune import`)", f, FormatName)
	}
	ver, err := strconv.Atoi(md["format_version"])
	if err != nil || ver < 1 {
		return Metadata{}, fmt.Errorf("format_version %q is not a positive number", md["format_version"])
	}
	if ver > FormatVersion {
		return Metadata{}, fmt.Errorf("format version %d is newer than this program reads (%d): upgrade Leafwatch", ver, FormatVersion)
	}
	v, err := ParseVariant(md["variant"])
	if err != nil {
		return Metadata{}, err
	}
	meta := Metadata{FormatVersion: ver, Variant: v, Source: md["source"]}
	if err := json.Unmarshal([]byte(md["labels"]), &meta.Labels); err != nil {
		return Metadata{}, fmt.Errorf("labels: %v", err)
	}
	for i, l := range meta.Labels {
		if l == "" {
			return Metadata{}, fmt.Errorf("label %d is empty", i)
		}
	}
	if meta.InputSize, err = strconv.Atoi(md["input_size"]); err != nil {
		return Metadata{}, fmt.Errorf("input_size %q: %v", md["input_size"], err)
	}
	if r, ok := md["resize"]; ok {
		if meta.Resize, err = strconv.Atoi(r); err != nil || meta.Resize < 0 {
			return Metadata{}, fmt.Errorf("resize %q is not a size", r)
		}
	}
	if err := json.Unmarshal([]byte(md["mean"]), &meta.Mean); err != nil {
		return Metadata{}, fmt.Errorf("mean: %v", err)
	}
	if err := json.Unmarshal([]byte(md["std"]), &meta.Std); err != nil {
		return Metadata{}, fmt.Errorf("std: %v", err)
	}
	for i, s := range meta.Std {
		if !(s > 0) || math.IsInf(float64(s), 0) {
			return Metadata{}, fmt.Errorf("std[%d] = %v: must be positive", i, s)
		}
	}
	if c := md["created"]; c != "" {
		if meta.Created, err = time.Parse(time.RFC3339, c); err != nil {
			return Metadata{}, fmt.Errorf("created %q: %v", c, err)
		}
	}
	if t := md["training"]; t != "" {
		meta.Training = new(TrainingSummary)
		if err := json.Unmarshal([]byte(t), meta.Training); err != nil {
			return Metadata{}, fmt.Errorf("training: %v", err)
		}
	}
	return meta, nil
}
