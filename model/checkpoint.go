package model

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
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
	// SHA256 is the whole hash of that file (hex); Version is its start.
	SHA256 string
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

// checkLabels is what Load demands of labels; Save demands it too, so no
// command writes a checkpoint that cannot be read back.
func checkLabels(labels []string) error {
	for i, l := range labels {
		if strings.TrimSpace(l) == "" {
			return fmt.Errorf("label %d is empty", i)
		}
	}
	return nil
}

func (m *Model) headerMetadata() (map[string]string, error) {
	if err := checkLabels(m.Meta.Labels); err != nil {
		return nil, err
	}
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
	if err := m.Whole("save " + path); err != nil {
		return err
	}
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
	m.Meta.SHA256 = hex.EncodeToString(h.Sum(nil))
	m.Meta.Version = m.Meta.SHA256[:12]
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

// Load reads a checkpoint file, streaming each tensor from the file into
// its own memory: the weights are never held twice, and nothing is
// mapped, so a file truncated or overwritten while it is read (`cp` over
// the model during a reload) gives an error, never a SIGBUS. A file that
// changes while it is read is refused; a file renamed over the path
// meanwhile is harmless (the open file is read to its end).
func Load(path string) (*Model, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load checkpoint: %w", err)
	}
	defer f.Close()
	before, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("load checkpoint: %w", err)
	}
	if !before.Mode().IsRegular() {
		return nil, fmt.Errorf("load checkpoint: %s is not a regular file", path)
	}
	m, err := readCheckpoint(bufio.NewReaderSize(f, 1<<20), before.Size())
	after, serr := f.Stat()
	if serr == nil && (after.Size() != before.Size() || !after.ModTime().Equal(before.ModTime())) {
		return nil, fmt.Errorf("load checkpoint %s: the file changed while it was read (deploy by copying beside it and renaming over it)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("load checkpoint %s: %w", path, err)
	}
	return m, nil
}

// ReadMetadata reads only a checkpoint's header metadata (labels, variant,
// input size …) without its weights: for tools that need the class list.
// Version and SHA256 stay empty (they hash the whole file).
func ReadMetadata(path string) (Metadata, error) {
	f, err := os.Open(path)
	if err != nil {
		return Metadata{}, fmt.Errorf("checkpoint: %w", err)
	}
	defer f.Close()
	var lenBuf [8]byte
	if _, err := io.ReadFull(f, lenBuf[:]); err != nil {
		return Metadata{}, fmt.Errorf("checkpoint %s: %w: %v", path, ErrNotCheckpoint, err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > maxHeader || n < 2 {
		return Metadata{}, fmt.Errorf("checkpoint %s: %w: no JSON header after the 8-byte length", path, ErrNotCheckpoint)
	}
	hdr := make([]byte, n)
	if _, err := io.ReadFull(f, hdr); err != nil {
		return Metadata{}, fmt.Errorf("checkpoint %s: %w: header: %v", path, ErrNotCheckpoint, err)
	}
	var raw struct {
		MD map[string]string `json:"__metadata__"`
	}
	if err := json.Unmarshal(hdr, &raw); err != nil {
		return Metadata{}, fmt.Errorf("checkpoint %s: %w: header is not JSON: %v", path, ErrNotCheckpoint, err)
	}
	meta, err := parseHeaderMetadata(raw.MD)
	if err != nil {
		return Metadata{}, fmt.Errorf("checkpoint %s: %w: %v", path, ErrNotCheckpoint, err)
	}
	return meta, nil
}

// maxHeader bounds the JSON header; a Leafwatch header is a few kB and the
// safetensors reference implementation refuses more than 100 MB.
const maxHeader = 100 << 20

// Decode parses a whole checkpoint held in memory.
func Decode(buf []byte) (*Model, error) {
	return readCheckpoint(bytes.NewReader(buf), int64(len(buf)))
}

type tensorEntry struct {
	name       string
	DType      string   `json:"dtype"`
	Shape      []uint64 `json:"shape"`
	Offsets    []uint64 `json:"data_offsets"`
	begin, end uint64
}

// readCheckpoint decodes size bytes of safetensors from r. Everything is
// checked against the header and the spec before a tensor is allocated,
// so a hostile header cannot make it allocate more than the file holds.
func readCheckpoint(r io.Reader, size int64) (*Model, error) {
	h := sha256.New()
	tr := io.TeeReader(r, h)
	hdr, err := readHeader(tr, size)
	if err != nil {
		return nil, err
	}
	dataLen := uint64(size) - 8 - uint64(len(hdr.raw))
	if hdr.need > dataLen {
		return nil, fmt.Errorf("%w: truncated file: tensors need %d bytes of data, %d present", ErrNotCheckpoint, hdr.need, dataLen)
	}
	meta, err := parseHeaderMetadata(hdr.md)
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
	shapes, err := checkEntries(spec, hdr.entries)
	if err != nil {
		return nil, err
	}
	params, err := readTensors(tr, hdr.entries, shapes, dataLen)
	if err != nil {
		return nil, err
	}
	meta.SHA256 = hex.EncodeToString(h.Sum(nil))
	meta.Version = meta.SHA256[:12]
	return New(spec, params, meta)
}

// checkpointHeader is a safetensors header as read: its bytes, the
// metadata and the tensor entries, and how much data they need.
type checkpointHeader struct {
	raw     []byte
	md      map[string]string
	entries []*tensorEntry
	need    uint64
}

// readHeader reads the 8-byte length and the JSON header.
func readHeader(tr io.Reader, size int64) (checkpointHeader, error) {
	var ch checkpointHeader
	if size < 10 {
		return ch, fmt.Errorf("%w: %d bytes is too short to be a safetensors file", ErrNotCheckpoint, size)
	}
	var lenBuf [8]byte
	if _, err := io.ReadFull(tr, lenBuf[:]); err != nil {
		return ch, fmt.Errorf("%w: %v", ErrNotCheckpoint, err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > maxHeader || n < 2 {
		return ch, fmt.Errorf("%w: not a safetensors file (no JSON header after the 8-byte length)", ErrNotCheckpoint)
	}
	if n > uint64(size-8) {
		return ch, fmt.Errorf("%w: truncated file: header claims %d bytes, only %d follow", ErrNotCheckpoint, n, size-8)
	}
	ch.raw = make([]byte, n)
	if _, err := io.ReadFull(tr, ch.raw); err != nil {
		return ch, fmt.Errorf("%w: header: %v", ErrNotCheckpoint, err)
	}
	if ch.raw[0] != '{' {
		return ch, fmt.Errorf("%w: not a safetensors file (no JSON header after the 8-byte length)", ErrNotCheckpoint)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(ch.raw, &raw); err != nil {
		return ch, fmt.Errorf("%w: not a safetensors file: header is not JSON: %v", ErrNotCheckpoint, err)
	}
	if m, ok := raw["__metadata__"]; ok {
		if err := json.Unmarshal(m, &ch.md); err != nil {
			return ch, fmt.Errorf("%w: __metadata__: %v", ErrNotCheckpoint, err)
		}
		delete(raw, "__metadata__")
	}
	for name, msg := range raw {
		e := &tensorEntry{name: name}
		if err := json.Unmarshal(msg, e); err != nil || len(e.Offsets) != 2 || e.Offsets[0] > e.Offsets[1] {
			return ch, fmt.Errorf("%w: tensor %q: bad entry in the header", ErrNotCheckpoint, name)
		}
		e.begin, e.end = e.Offsets[0], e.Offsets[1]
		ch.need = max(ch.need, e.end)
		ch.entries = append(ch.entries, e)
	}
	return ch, nil
}

// checkEntries checks the header's tensors against the variant's: none
// missing or extra, shapes, F32, sizes, no overlap. It sorts entries into
// file order and returns each tensor's shape.
func checkEntries(spec Spec, entries []*tensorEntry) (map[string]ParamShape, error) {
	want, err := spec.Params()
	if err != nil {
		return nil, err
	}
	wantShape := map[string]ParamShape{}
	for _, p := range want {
		wantShape[p.Name] = p
	}
	byName := map[string]*tensorEntry{}
	for _, e := range entries {
		if _, ok := wantShape[e.name]; !ok {
			return nil, fmt.Errorf("%w: extra tensor %q is not part of the %s AlexNet", ErrNotCheckpoint, e.name, spec.Variant)
		}
		byName[e.name] = e
	}
	for _, p := range want {
		e, ok := byName[p.Name]
		if !ok {
			return nil, fmt.Errorf("%w: missing tensor %q (%s)", ErrNotCheckpoint, p.Name, spec.Layers[p.Layer].Group)
		}
		shape := make([]int, len(e.Shape))
		for i, d := range e.Shape {
			shape[i] = int(d)
		}
		if !sameShape(shape, p.Shape) {
			return nil, fmt.Errorf("%w: tensor %q has shape %v, expected %v for %d classes", ErrNotCheckpoint, p.Name, e.Shape, p.Shape, spec.Classes)
		}
		if e.DType != "F32" {
			return nil, fmt.Errorf("%w: tensor %q is %s, checkpoints hold F32", ErrNotCheckpoint, p.Name, e.DType)
		}
		if e.end-e.begin != uint64(numel(shape))*4 {
			return nil, fmt.Errorf("%w: tensor %q holds %d bytes, shape %v needs %d", ErrNotCheckpoint, p.Name, e.end-e.begin, shape, numel(shape)*4)
		}
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].begin < entries[j].begin })
	for i := 1; i < len(entries); i++ {
		if entries[i].begin < entries[i-1].end {
			return nil, fmt.Errorf("%w: tensors %q and %q overlap", ErrNotCheckpoint, entries[i-1].name, entries[i].name)
		}
	}
	return wantShape, nil
}

// readTensors streams the data section in file order (entries sorted),
// every byte through the reader (and so the hash), to its end.
func readTensors(tr io.Reader, entries []*tensorEntry, shapes map[string]ParamShape, dataLen uint64) (map[string]*Tensor, error) {
	params := make(map[string]*Tensor, len(entries))
	var pos uint64
	for _, e := range entries {
		if _, err := io.CopyN(io.Discard, tr, int64(e.begin-pos)); err != nil {
			return nil, fmt.Errorf("%w: truncated while reading: %v", ErrNotCheckpoint, err)
		}
		t := &Tensor{Shape: slices.Clone(shapes[e.name].Shape), Data: make([]float32, (e.end-e.begin)/4)}
		if len(t.Data) > 0 {
			if _, err := io.ReadFull(tr, unsafe.Slice((*byte)(unsafe.Pointer(&t.Data[0])), len(t.Data)*4)); err != nil {
				return nil, fmt.Errorf("%w: truncated while reading %s: %v", ErrNotCheckpoint, e.name, err)
			}
			if !littleEndian {
				for i, v := range t.Data {
					t.Data[i] = math.Float32frombits(bits.ReverseBytes32(math.Float32bits(v)))
				}
			}
		}
		params[e.name] = t
		pos = e.end
	}
	if _, err := io.CopyN(io.Discard, tr, int64(dataLen-pos)); err != nil {
		return nil, fmt.Errorf("%w: truncated while reading: %v", ErrNotCheckpoint, err)
	}
	return params, nil
}

// littleEndian: safetensors data is little-endian; big-endian hosts swap.
var littleEndian = func() bool { x := uint16(1); return *(*byte)(unsafe.Pointer(&x)) == 1 }()

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
	if err := checkLabels(meta.Labels); err != nil {
		return Metadata{}, err
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
