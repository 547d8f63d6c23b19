//go:build !cuda

package gpu

import (
	"errors"
	"log/slog"

	"github.com/leafwatch/leafwatch/model"
)

var errNoCUDA = errors.New("this binary was built without CUDA: rebuild with `make build-cuda` (go build -tags cuda) on a machine with the CUDA toolkit")

func newCUDA(*model.Model, model.Options, *slog.Logger) (model.Engine, error) { return nil, errNoCUDA }

func available() (bool, string) { return false, errNoCUDA.Error() }

func newTrainer(*model.Model, int, OptimSettings) (TrainStepper, error) { return nil, errNoCUDA }

// SetLibraryDirs has nothing to configure without CUDA.
func SetLibraryDirs([]string) {}
