package train

import (
	"context"
	"image"

	"gocv.io/x/gocv"

	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/model/cpu"
	"github.com/leafwatch/leafwatch/vision"
)

// Predictor classifies image files exactly as leafwatchd classifies a
// camera frame: the same file decoding (vision.ReadImage, which the folder
// camera uses), the same regions (vision.Tiling), the same preprocessing
// (vision.Preprocessor) and the same engine batching.
type Predictor struct {
	clf *cpu.Classifier
	pp  *vision.Preprocessor
	img gocv.Mat
}

// NewPredictor prepares m with the regions a camera would use (its
// leaves, or its tiling; a zero Regions: the whole image only) and the CPU
// engine's FC precision the daemon is configured with ("" is the daemon's
// default, model.DefaultPrecision).
func NewPredictor(m *model.Model, regions vision.Regions, prec model.Precision) (*Predictor, error) {
	if prec == "" {
		prec = model.DefaultPrecision
	}
	p, err := model.ParsePrecision(string(prec))
	if err != nil {
		return nil, err
	}
	if regions.Mode == "" {
		regions.Mode = vision.RegionsTiles
	}
	pp, err := vision.NewRegionPreprocessor(PreprocessOf(m.Meta), regions)
	if err != nil {
		return nil, err
	}
	return &Predictor{clf: cpu.NewClassifier(m, model.Options{MaxBatch: model.DefaultMaxBatch, Precision: p}), pp: pp, img: gocv.NewMat()}, nil
}

// Close frees the buffers.
func (p *Predictor) Close() {
	p.pp.Close()
	p.img.Close()
}

// Prediction is one file's answer: a prediction per region, in the
// daemon's batch order, and the model input they came from.
type Prediction struct {
	Boxes []image.Rectangle
	Kinds []string // leaf, tile or frame, per box
	// Fallback says why leaves were not used ("" when they were).
	Fallback string
	Preds    []model.Prediction
	Input    []float32 // owned by the Predictor; valid until the next call
}

// Predict classifies one file. Errors do not repeat the path.
func (p *Predictor) Predict(ctx context.Context, path string, topK int) (Prediction, error) {
	if err := vision.ReadImage(path, &p.img); err != nil {
		return Prediction{}, err
	}
	x, boxes, err := p.pp.Run(p.img)
	if err != nil {
		return Prediction{}, err
	}
	preds, err := p.clf.Classify(ctx, x, len(boxes), topK)
	if err != nil {
		return Prediction{}, err
	}
	return Prediction{Boxes: boxes, Kinds: p.pp.Kinds(), Fallback: p.pp.Fallback(), Preds: preds, Input: x}, nil
}
