//go:build cuda

package gpu

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"sync"

	"gorgonia.org/cu"

	"github.com/leafwatch/leafwatch/model"
)

// Engine runs a model on a CUDA device. Weights are uploaded once;
// activation buffers are allocated for MaxBatch images and reused.
type Engine struct {
	*net
	mu sync.Mutex // one inference at a time: the device serialises anyway
}

func newCUDA(m *model.Model, opt model.Options, log *slog.Logger) (model.Engine, error) {
	if opt.MaxBatch <= 0 {
		opt.MaxBatch = 8
	}
	if log == nil {
		log = slog.Default()
	}
	d, err := lockedOpen(log)
	if err != nil {
		return nil, err
	}
	defer d.unlock()
	prec := model.FP32
	if p, _ := model.ParsePrecision(string(opt.Precision)); p == model.FP16 {
		if why := d.halfSupport(); why != "" {
			log.Warn("CUDA engine computes in fp32, not the fp16 the configuration asks for", "reason", why)
		} else {
			prec = model.FP16
		}
	} else if p != model.FP32 && p != "" {
		log.Info("CUDA engine computes in fp32: it has no "+string(p)+" path (fp16 and fp32 only)", "precision", p)
	}
	nt, err := d.newNet(m, opt.MaxBatch, prec)
	if err != nil {
		d.release()
		return nil, err
	}
	if opt.ReleaseWeights {
		m.ReleaseAll() // uploaded; inference reads only the device copy
	}
	return &Engine{net: nt}, nil
}

// lockedDevice is an opened device whose OS thread is still locked.
type lockedDevice struct {
	*device
	unlock func()
}

func lockedOpen(log *slog.Logger) (lockedDevice, error) {
	unlock := lockThread()
	d, err := openDevice(log)
	if err != nil {
		unlock()
		return lockedDevice{}, err
	}
	return lockedDevice{d, unlock}, nil
}

// Close frees the device memory, the cuBLAS handle and the context.
// Closing twice is harmless.
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.d.released {
		return nil
	}
	unlock := lockThread()
	defer unlock()
	cu.SetCurrentContext(e.d.ctx)
	e.d.release()
	return nil
}

func (e *Engine) Model() *model.Model { return e.m }
func (e *Engine) Engine() string      { return e.d.name }

// DeviceBytes is the device memory the engine allocated itself: weights,
// activations and buffers (the CUDA context and cuBLAS hold more).
func (e *Engine) DeviceBytes() int64 { return e.d.allocated }

// Precision is what the engine's GEMMs read: fp16 (convolutions and all
// fully connected layers but the last, with fp32 sums) or fp32.
func (e *Engine) Precision() model.Precision { return e.prec }

// Failed returns the error that made the engine unusable, or nil.
func (e *Engine) Failed() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.d.failed
}

// Probabilities runs n images through the network on the device. After a
// sticky CUDA error every call fails with an error wrapping
// model.ErrEngineFailed.
func (e *Engine) Probabilities(ctx context.Context, x []float32, n int, probs []float32) error {
	il, k := e.m.InputLen(), e.m.Classes()
	if len(x) < n*il || len(probs) < n*k {
		return fmt.Errorf("input holds %d values and output %d; %d images need %d and %d", len(x), len(probs), n, n*il, n*k)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	leave, err := e.d.enter()
	if err != nil {
		return err
	}
	defer leave()
	for s := 0; s < n; s += e.cap {
		if err := ctx.Err(); err != nil {
			return err
		}
		b := min(e.cap, n-s)
		if err := e.forward(x[s*il:(s+b)*il], b, probs[s*k:(s+b)*k]); err != nil {
			return fmt.Errorf("CUDA forward: %w", err)
		}
	}
	return nil
}

func (e *Engine) forward(x []float32, n int, probs []float32) error {
	if err := e.d.upload(e.acts[0], x); err != nil {
		return err
	}
	for i := range e.m.Spec.Layers {
		if err := e.layer(i, n); err != nil {
			return err
		}
	}
	last := e.acts[len(e.acts)-1]
	k := e.m.Classes()
	if err := e.d.launch("softmax", n, last, n, k); err != nil {
		return err
	}
	if err := e.d.download(probs[:n*k], last); err != nil {
		return err
	}
	return e.d.check(cu.Synchronize())
}

// Classify returns the top-k predictions of n images.
func (e *Engine) Classify(ctx context.Context, x []float32, n, topK int) ([]model.Prediction, error) {
	return model.ClassifyWith(ctx, e, x, n, topK)
}

// lockThread pins the goroutine to its OS thread while it uses a CUDA
// context: the current context is per thread.
func lockThread() func() {
	runtime.LockOSThread()
	return runtime.UnlockOSThread
}
