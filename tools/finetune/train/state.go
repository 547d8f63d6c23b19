package train

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"github.com/nlpodyssey/safetensors"

	"github.com/leafwatch/leafwatch/model"
)

// EpochLog is one row of the per-epoch CSV log.
type EpochLog struct {
	Epoch      int     `json:"epoch"`
	LR         float64 `json:"lr"`
	TrainLoss  float64 `json:"train_loss"`
	TrainAcc   float64 `json:"train_acc"`
	ValLoss    float64 `json:"val_loss"`
	ValAcc     float64 `json:"val_acc"`
	ValMacroF1 float64 `json:"val_macro_f1"`
	// Per source, when the run has field samples.
	ValAccData   float64 `json:"val_acc_plantvillage,omitempty"`
	ValAccField  float64 `json:"val_acc_field,omitempty"`
	ValField     int     `json:"val_field,omitempty"`
	Seconds      float64 `json:"seconds"`
	ImagesPerSec float64 `json:"images_per_s"`
}

// State is everything needed to continue an interrupted run exactly. The
// random streams (shuffle, augmentation, dropout) are derived from Seed,
// epoch and step, so the seed is their whole state.
type State struct {
	Seed       uint64     `json:"seed"`
	Epoch      int        `json:"epoch"`       // current epoch (0-based)
	Step       int        `json:"step"`        // batches done in it
	GlobalStep int        `json:"global_step"` // batches done in all
	LossSum    float64    `json:"loss_sum"`    // partial epoch
	Correct    int        `json:"correct"`
	Seen       int        `json:"seen"`
	BestF1     float64    `json:"best_f1"`
	BestEpoch  int        `json:"best_epoch"`
	BadEpochs  int        `json:"bad_epochs"` // since the best, for early stopping
	History    []EpochLog `json:"history"`
	Schedule   Schedule   `json:"schedule"`
	Done       bool       `json:"done"`
	// Flags are the settings the run was started with (finetune train's
	// flag names); a resume restores them.
	Flags map[string]string `json:"flags,omitempty"`
}

// SaveState writes weights, momentum and progress to one safetensors file,
// atomically. The model part is also a complete checkpoint in its own
// right (saved beside it as latest.safetensors).
func SaveState(path string, m *model.Model, opt *SGD, st State) error {
	views := map[string]model.F32View{}
	for name, p := range m.Params {
		views["param/"+name] = model.ViewOf(p.Shape, p.Data)
		views["velocity/"+name] = model.ViewOf(p.Shape, opt.Velocity[name])
	}
	stj, err := json.Marshal(st)
	if err != nil {
		return err
	}
	labels, _ := json.Marshal(m.Meta.Labels)
	meta, _ := json.Marshal(m.Meta)
	mult, _ := json.Marshal(opt.Mult)
	md := map[string]string{"format": "leafwatch-train-state", "format_version": "1", "state": string(stj),
		"variant": string(m.Spec.Variant), "labels": string(labels), "model_meta": string(meta),
		"momentum": fmt.Sprint(opt.Momentum), "weight_decay": fmt.Sprint(opt.WeightDecay), "lr_mult": string(mult)}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".state-*")
	if err != nil {
		return fmt.Errorf("save training state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := safetensors.SerializeToWriter(views, md, tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("save training state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// truncatedSafetensors reports whether b looks like the start of a longer
// safetensors file, and how long that file would be.
func truncatedSafetensors(b []byte) (int64, bool) {
	if len(b) < 8 {
		return 8, len(b) > 0
	}
	n := int64(binary.LittleEndian.Uint64(b))
	if n < 2 || n > 100<<20 || b[8] != '{' {
		return 0, false
	}
	if int64(len(b)) < 8+n {
		return 8 + n, true
	}
	var hdr map[string]json.RawMessage
	if json.Unmarshal(b[8:8+n], &hdr) != nil {
		return 0, false
	}
	var end int64
	for name, raw := range hdr {
		if name == "__metadata__" {
			continue
		}
		var t struct {
			Offsets [2]int64 `json:"data_offsets"`
		}
		if json.Unmarshal(raw, &t) == nil {
			end = max(end, t.Offsets[1])
		}
	}
	if need := 8 + n + end; int64(len(b)) < need {
		return need, true
	}
	return 0, false
}

// LoadState reads a training-state file.
func LoadState(path string) (*model.Model, *SGD, State, error) {
	var st State
	buf, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, st, fmt.Errorf("resume: %w", err)
	}
	sf, err := safetensors.Deserialize(buf)
	if err != nil {
		if need, ok := truncatedSafetensors(buf); ok {
			return nil, nil, st, fmt.Errorf("resume %s: the file is cut short (%d of %d bytes): it was not copied or written completely — copy it again", path, len(buf), need)
		}
		return nil, nil, st, fmt.Errorf("resume %s: not a training-state file: %v", path, err)
	}
	_, hdr, _ := safetensors.ReadMetadata(buf)
	md := hdr.Metadata()
	if md["format"] != "leafwatch-train-state" {
		return nil, nil, st, fmt.Errorf("resume %s: not a Leafwatch training-state file (give the state.safetensors of a finetune output folder)", path)
	}
	if err := json.Unmarshal([]byte(md["state"]), &st); err != nil {
		return nil, nil, st, fmt.Errorf("resume %s: state: %v", path, err)
	}
	var meta model.Metadata
	if err := json.Unmarshal([]byte(md["model_meta"]), &meta); err != nil {
		return nil, nil, st, fmt.Errorf("resume %s: model metadata: %v", path, err)
	}
	spec, err := model.NewSpec(meta.Variant, len(meta.Labels))
	if err != nil {
		return nil, nil, st, fmt.Errorf("resume %s: %v", path, err)
	}
	params := map[string]*model.Tensor{}
	velocity := map[string][]float32{}
	for _, nt := range sf.Tensors() {
		shape := make([]int, len(nt.TensorView.Shape()))
		for i, d := range nt.TensorView.Shape() {
			shape[i] = int(d)
		}
		data := make([]float32, len(nt.TensorView.Data())/4)
		copy(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(data))), len(data)*4), nt.TensorView.Data())
		if name, ok := strings.CutPrefix(nt.Name, "param/"); ok {
			params[name] = &model.Tensor{Shape: shape, Data: data}
		} else if name, ok := strings.CutPrefix(nt.Name, "velocity/"); ok {
			velocity[name] = data
		}
	}
	m, err := model.New(spec, params, meta)
	if err != nil {
		return nil, nil, st, fmt.Errorf("resume %s: %w", path, err)
	}
	opt := NewSGD(m, 0, 0)
	fmt.Sscan(md["momentum"], &opt.Momentum)
	fmt.Sscan(md["weight_decay"], &opt.WeightDecay)
	json.Unmarshal([]byte(md["lr_mult"]), &opt.Mult)
	for name := range opt.Velocity {
		v, ok := velocity[name]
		if !ok || len(v) != len(opt.Velocity[name]) {
			return nil, nil, st, fmt.Errorf("resume %s: momentum for %s missing", path, name)
		}
		opt.Velocity[name] = v
	}
	return m, opt, st, nil
}
