package gpu

import (
	"fmt"
	"log/slog"

	"github.com/leafwatch/leafwatch/model"
)

// Kinds of engine a user can ask for.
const (
	Auto = "auto"
	CPU  = "cpu"
	CUDA = "cuda"
)

// Select returns the engine for m: "cpu" always works; "cuda" fails with a
// clear error when the binary has no CUDA or no device is usable; "auto"
// takes CUDA when it can and says why not otherwise.
func Select(m *model.Model, kind string, opt model.Options, log *slog.Logger) (model.Engine, error) {
	if log == nil {
		log = slog.Default()
	}
	switch kind {
	case CPU:
		c := model.NewClassifier(m, opt)
		log.Info("engine selected", "engine", c.Engine(), "why", "engine: cpu")
		return c, nil
	case CUDA, Auto, "":
	default:
		return nil, fmt.Errorf("engine %q: use auto, cpu or cuda", kind)
	}
	e, err := newCUDA(m, opt)
	if err == nil {
		log.Info("engine selected", "engine", e.Engine(), "why", "CUDA device available")
		return e, nil
	}
	if kind == CUDA {
		return nil, fmt.Errorf("engine cuda: %w", err)
	}
	c := model.NewClassifier(m, opt)
	log.Info("engine selected", "engine", c.Engine(), "why", "no CUDA: "+err.Error())
	return c, nil
}

// Available reports whether this binary has CUDA and a device is usable,
// with the reason when not.
func Available() (bool, string) { return available() }
