//go:build cuda

package gpu

// #include <stdint.h>
// static float* devptr(unsigned long long p) { return (float*)(uintptr_t)p; }
import "C"

import (
	"context"
	_ "embed"
	"fmt"
	"runtime"
	"sync"
	"unsafe"

	"gonum.org/v1/gonum/blas"
	"gorgonia.org/cu"
	cublas "gorgonia.org/cu/blas"
	"gorgonia.org/cu/nvrtc"

	"github.com/leafwatch/leafwatch/model"
)

//go:embed kernels.cu
var kernelSource string

var kernelNames = []string{"im2col", "fill_rows", "fill_cols", "relu", "maxpool", "lrn", "softmax",
	"fill", "mul", "relu_bwd", "maxpool_train", "maxpool_bwd", "lrn_train", "lrn_bwd", "col2im",
	"bias_grad_rows", "bias_grad_cols", "softmax_ce", "sgd"}

// device is one CUDA context with the compiled kernels and a cuBLAS
// handle; the inference Engine and the training Trainer each own one.
type device struct {
	name string
	ctx  cu.CUContext
	mod  cu.Module
	fns  map[string]cu.Function
	bl   *cublas.Standard
	bufs []cu.DevicePtr // everything allocated, for release
}

// Engine runs a model on a CUDA device. Weights are uploaded once;
// activation buffers are allocated for MaxBatch images and reused.
type Engine struct {
	*device
	m   *model.Model
	cap int

	mu      sync.Mutex // one inference at a time: the device serialises anyway
	closed  bool
	weights map[string]cu.DevicePtr
	acts    []cu.DevicePtr // acts[i]: input of layer i (in-place layers share)
	col     cu.DevicePtr
	shapes  []model.Shape3
}

func available() (bool, string) {
	n, err := cu.NumDevices()
	if err != nil {
		return false, fmt.Sprintf("CUDA driver not usable: %v", err)
	}
	if n == 0 {
		return false, "no CUDA device found"
	}
	return true, ""
}

// openDevice creates a context on device 0 and compiles the kernels for it.
// Call with the OS thread locked; the context stays current on it.
func openDevice() (*device, error) {
	if ok, why := available(); !ok {
		return nil, fmt.Errorf("%s", why)
	}
	dev, err := cu.GetDevice(0)
	if err != nil {
		return nil, err
	}
	name, _ := dev.Name()
	major, _ := dev.Attribute(cu.ComputeCapabilityMajor)
	minor, _ := dev.Attribute(cu.ComputeCapabilityMinor)
	ctx, err := dev.MakeContext(cu.SchedAuto)
	if err != nil {
		return nil, fmt.Errorf("CUDA context: %w", err)
	}
	d := &device{ctx: ctx, fns: map[string]cu.Function{}, name: fmt.Sprintf("cuda/%s (sm_%d%d)", name, major, minor)}
	prog, err := nvrtc.CreateProgram(kernelSource, "kernels.cu")
	if err != nil {
		d.release()
		return nil, fmt.Errorf("NVRTC: %w", err)
	}
	defer prog.Destroy()
	if err := prog.Compile(fmt.Sprintf("--gpu-architecture=compute_%d%d", major, minor)); err != nil {
		log, _ := prog.GetLog()
		d.release()
		return nil, fmt.Errorf("NVRTC compile: %w\n%s", err, log)
	}
	ptx, err := prog.GetPTX()
	if err != nil {
		d.release()
		return nil, err
	}
	if d.mod, err = cu.LoadData(ptx); err != nil {
		d.release()
		return nil, fmt.Errorf("load kernels: %w", err)
	}
	for _, k := range kernelNames {
		if d.fns[k], err = d.mod.Function(k); err != nil {
			d.release()
			return nil, fmt.Errorf("kernel %s: %w", k, err)
		}
	}
	d.bl = cublas.New()
	return d, nil
}

func newCUDA(m *model.Model, opt model.Options) (model.Engine, error) {
	if opt.MaxBatch <= 0 {
		opt.MaxBatch = 8
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	d, err := openDevice()
	if err != nil {
		return nil, err
	}
	e := &Engine{device: d, m: m, cap: opt.MaxBatch, weights: map[string]cu.DevicePtr{}}
	fail := func(err error) (model.Engine, error) {
		e.release()
		return nil, err
	}
	for name, t := range m.Params {
		p, err := e.alloc(len(t.Data))
		if err != nil {
			return fail(err)
		}
		if err := cu.MemcpyHtoD(p, unsafe.Pointer(&t.Data[0]), int64(len(t.Data)*4)); err != nil {
			return fail(err)
		}
		e.weights[name] = p
	}
	if e.shapes, err = m.Spec.Shapes(); err != nil {
		return fail(err)
	}
	e.acts = make([]cu.DevicePtr, len(e.shapes))
	colLen := 0
	for i, l := range m.Spec.Layers {
		in, out := e.shapes[i], e.shapes[i+1]
		if i == 0 {
			if e.acts[0], err = e.alloc(e.cap * in.Len()); err != nil {
				return fail(err)
			}
		}
		if l.Kind == model.ReLU || l.Kind == model.Dropout {
			e.acts[i+1] = e.acts[i]
		} else if e.acts[i+1], err = e.alloc(e.cap * out.Len()); err != nil {
			return fail(err)
		}
		if l.Kind == model.Conv {
			colLen = max(colLen, in.C/l.Groups*l.Kernel*l.Kernel*out.H*out.W)
		}
	}
	if e.col, err = e.alloc(colLen); err != nil {
		return fail(err)
	}
	return e, nil
}

func (e *device) alloc(floats int) (cu.DevicePtr, error) {
	p, err := cu.MemAlloc(int64(max(floats, 1)) * 4)
	if err != nil {
		return 0, fmt.Errorf("GPU memory (%d MB): %w", floats*4>>20, err)
	}
	e.bufs = append(e.bufs, p)
	return p, nil
}

func (e *device) release() {
	for _, p := range e.bufs {
		cu.MemFree(p)
	}
	e.bufs = nil
	if e.mod != (cu.Module{}) {
		e.mod.Unload()
	}
	e.ctx.Destroy()
}

// Close frees the device memory and the context.
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if e.closed {
		return nil
	}
	e.closed = true
	cu.SetCurrentContext(e.ctx)
	e.release()
	return nil
}

func (e *Engine) Model() *model.Model { return e.m }
func (e *Engine) Engine() string      { return e.name }

// upload copies host floats to the device.
func upload(p cu.DevicePtr, x []float32) error {
	if len(x) == 0 {
		return nil
	}
	return cu.MemcpyHtoD(p, unsafe.Pointer(&x[0]), int64(len(x)*4))
}

// download copies device floats to the host.
func download(x []float32, p cu.DevicePtr) error {
	if len(x) == 0 {
		return nil
	}
	return cu.MemcpyDtoH(unsafe.Pointer(&x[0]), p, int64(len(x)*4))
}

// slice views device memory as a []float32 for the cuBLAS binding, which
// passes &s[0] straight to cuBLAS; the memory is never touched from Go.
func slice(p cu.DevicePtr, n int) []float32 {
	return unsafe.Slice((*float32)(unsafe.Pointer(C.devptr(C.ulonglong(p)))), n)
}

// sgemm computes row-major C = op(A)·op(B) + beta·C with column-major
// cuBLAS by swapping the operands.
func (e *device) sgemm(tA, tB bool, m, n, k int, a cu.DevicePtr, lda int, b cu.DevicePtr, ldb int, beta float32, c cu.DevicePtr, ldc int) error {
	ta, tb := blas.NoTrans, blas.NoTrans
	if tA {
		ta = blas.Trans
	}
	if tB {
		tb = blas.Trans
	}
	e.bl.Sgemm(tb, ta, n, m, k, 1, slice(b, k*n), ldb, slice(a, m*k), lda, beta, slice(c, m*n), ldc)
	return e.bl.Err()
}

func (e *device) launch(name string, n int, args ...any) error {
	params := make([]unsafe.Pointer, len(args))
	vals := make([]uint64, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case cu.DevicePtr:
			vals[i] = uint64(v)
		case int:
			vals[i] = uint64(int64(v))
		case float64:
			vals[i] = *(*uint64)(unsafe.Pointer(&v))
		default:
			return fmt.Errorf("kernel %s: argument %d of type %T", name, i, a)
		}
		params[i] = unsafe.Pointer(&vals[i])
	}
	const block = 256
	grid := min((n+block-1)/block, 65535)
	return e.fns[name].Launch(max(grid, 1), 1, 1, block, 1, 1, 0, cu.NoStream, params)
}

// Probabilities runs n images through the network on the device.
func (e *Engine) Probabilities(ctx context.Context, x []float32, n int, probs []float32) error {
	il, k := e.m.InputLen(), e.m.Classes()
	if len(x) < n*il || len(probs) < n*k {
		return fmt.Errorf("input holds %d values and output %d; %d images need %d and %d", len(x), len(probs), n, n*il, n*k)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return fmt.Errorf("CUDA engine closed (model reloaded)")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cu.SetCurrentContext(e.ctx); err != nil {
		return err
	}
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
	if err := cu.MemcpyHtoD(e.acts[0], unsafe.Pointer(&x[0]), int64(len(x)*4)); err != nil {
		return err
	}
	for i, l := range e.m.Spec.Layers {
		in, out := e.shapes[i], e.shapes[i+1]
		src, dst := e.acts[i], e.acts[i+1]
		il, ol := in.Len(), out.Len()
		var err error
		switch l.Kind {
		case model.Conv:
			err = e.convForward(&l, in, out, src, dst, n, e.weights[l.Name+".weight"], e.weights[l.Name+".bias"], e.col)
		case model.ReLU:
			err = e.launch("relu", n*ol, dst, n*ol)
		case model.LRN:
			for j := 0; j < n && err == nil; j++ {
				err = e.launch("lrn", il, src+cu.DevicePtr(j*il*4), dst+cu.DevicePtr(j*ol*4), in.C, in.H*in.W, l.Size, float64(l.Alpha), float64(l.Beta), float64(l.Bias))
			}
		case model.MaxPool:
			for j := 0; j < n && err == nil; j++ {
				err = e.launch("maxpool", ol, src+cu.DevicePtr(j*il*4), dst+cu.DevicePtr(j*ol*4), in.C, in.H, in.W, out.H, out.W, l.Kernel, l.Stride, l.Pad)
			}
		case model.Dropout:
		case model.FC:
			w, bias := e.weights[l.Name+".weight"], e.weights[l.Name+".bias"]
			if err = e.launch("fill_cols", n*l.Out, dst, bias, n, l.Out); err == nil {
				err = e.sgemm(false, true, n, l.Out, il, src, il, w, il, 1, dst, l.Out)
			}
		}
		if err != nil {
			return fmt.Errorf("layer %d (%s): %w", i, l.Kind, err)
		}
	}
	last := e.acts[len(e.acts)-1]
	k := e.m.Classes()
	if err := e.launch("softmax", n, last, n, k); err != nil {
		return err
	}
	if err := cu.MemcpyDtoH(unsafe.Pointer(&probs[0]), last, int64(n*k*4)); err != nil {
		return err
	}
	return cu.Synchronize()
}

// Classify returns the top-k predictions of n images.
func (e *Engine) Classify(ctx context.Context, x []float32, n, topK int) ([]model.Prediction, error) {
	return model.ClassifyWith(ctx, e, x, n, topK)
}

// convForward runs a (grouped) convolution for n images: bias fill, then
// per group im2col into col and one cuBLAS GEMM.
func (d *device) convForward(l *model.Layer, in, out model.Shape3, src, dst cu.DevicePtr, n int, w, bias, col cu.DevicePtr) error {
	cinG, coutG := in.C/l.Groups, l.Out/l.Groups
	kk, p := cinG*l.Kernel*l.Kernel, out.H*out.W
	il, ol := in.Len(), out.Len()
	for j := 0; j < n; j++ {
		xj, yj := src+cu.DevicePtr(j*il*4), dst+cu.DevicePtr(j*ol*4)
		if err := d.launch("fill_rows", l.Out*p, yj, bias, l.Out, p); err != nil {
			return err
		}
		for g := 0; g < l.Groups; g++ {
			if err := d.launch("im2col", kk*p, xj, in.H, in.W, g*cinG, cinG, l.Kernel, l.Stride, l.Pad, out.H, out.W, col); err != nil {
				return err
			}
			if err := d.sgemm(false, false, coutG, p, kk, w+cu.DevicePtr(g*coutG*kk*4), kk, col, p, 1, yj+cu.DevicePtr(g*coutG*p*4), p); err != nil {
				return err
			}
		}
	}
	return nil
}
