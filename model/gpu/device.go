//go:build cuda

package gpu

import (
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"runtime"
	"sync"
	"unsafe"

	"gorgonia.org/cu"

	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/model/gpu/cudalib"
)

//go:embed kernels.cu
var kernelSource string

// KernelSource is the CUDA C the engine compiles at start (for the host
// emulation harness, which compiles the same text for the CPU).
func KernelSource() string { return kernelSource }

var kernelNames = []string{"im2col", "fill_rows", "fill_cols", "relu", "maxpool", "lrn", "softmax",
	"mul", "relu_bwd", "maxpool_train", "maxpool_bwd", "lrn_train", "lrn_bwd", "col2im",
	"bias_grad_rows", "bias_grad_cols", "softmax_ce", "sgd",
	"im2col_h", "to_half", "scale_bias_rows", "scale_bias_cols"}

var (
	libMu   sync.Mutex
	libDirs []string
)

// SetLibraryDirs names the folders to take cuBLAS and NVRTC from (config
// cuda_libs); empty restores the search (LEAFWATCH_CUDA_LIBS, the loader
// path, /usr/local/cuda*, JetPack's folders).
func SetLibraryDirs(dirs []string) {
	libMu.Lock()
	libDirs = append([]string(nil), dirs...)
	libMu.Unlock()
}

// device is one CUDA context with the compiled kernels and a cuBLAS
// handle; the inference Engine and the training Trainer each own one.
// Its methods need the OS thread locked and the context current.
type device struct {
	name string
	arch int // the compute capability the kernels were compiled for
	cc   int // the device's compute capability (major*10+minor)
	ctx  cu.CUContext
	mod  cu.Module
	fns  map[string]cu.Function
	libs *cudalib.Libs
	bl   *cudalib.BLAS
	bufs []cu.DevicePtr // everything allocated, for release
	// allocated is the bytes of bufs: the engine's own device memory
	// (weights, activations, buffers), without the context's and cuBLAS's.
	allocated int64

	// failed is set once the context is poisoned (a sticky error such as
	// an illegal address): every later call returns it at once.
	failed   error
	released bool
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

// stickyCodes are the CUDA errors after which a context cannot be used
// again (CUDA documents them as "the context cannot be used, so it must
// be destroyed").
var stickyCodes = map[int64]bool{
	214: true, // ECC_UNCORRECTABLE
	700: true, // ILLEGAL_ADDRESS
	702: true, // LAUNCH_TIMEOUT
	714: true, // HARDWARE_STACK_ERROR
	715: true, // ILLEGAL_INSTRUCTION
	716: true, // MISALIGNED_ADDRESS
	717: true, // INVALID_ADDRESS_SPACE
	718: true, // INVALID_PC
	719: true, // LAUNCH_FAILED
}

// cudaCode extracts a driver error number, or -1.
func cudaCode(err error) int64 {
	for err != nil {
		v := reflect.ValueOf(err)
		if v.Kind() == reflect.Int && v.Type().PkgPath() == "gorgonia.org/cu" {
			return v.Int()
		}
		err = errors.Unwrap(err)
	}
	return -1
}

// check turns a driver error into the device's failure when it is sticky.
func (d *device) check(err error) error {
	if err == nil {
		return d.failed
	}
	if d.failed != nil {
		return d.failed
	}
	if stickyCodes[cudaCode(err)] {
		d.failed = fmt.Errorf("%w: CUDA context lost (%v); the engine cannot recover in this context", model.ErrEngineFailed, err)
		return d.failed
	}
	return err
}

// poisoned asks the driver whether an error came from a dead context:
// cuBLAS reports a launch on a poisoned context only as EXECUTION_FAILED.
func (d *device) poisoned(err error) error {
	if err == nil || d.failed != nil {
		return d.check(err)
	}
	if serr := d.check(cu.Synchronize()); serr != nil && d.failed != nil {
		return d.failed
	}
	return err
}

// chooseArch picks the newest architecture NVRTC compiles for that the
// device can run: PTX for an older architecture is JIT-compiled forward by
// the driver, so a GPU newer than the NVRTC still works.
func chooseArch(cc int, supported []int) (int, error) {
	best := 0
	for _, a := range supported {
		if a <= cc && a > best {
			best = a
		}
	}
	if best == 0 {
		lo := 0
		if len(supported) > 0 {
			lo = supported[0]
		}
		return 0, fmt.Errorf("GPU compute capability %d.%d is older than any this NVRTC compiles for (oldest %d.%d)", cc/10, cc%10, lo/10, lo%10)
	}
	return best, nil
}

// openDevice creates a context on device 0, binds cuBLAS and NVRTC and
// compiles the kernels. Call with the OS thread locked; the context stays
// current on it.
func openDevice(log *slog.Logger) (*device, error) {
	if ok, why := available(); !ok {
		return nil, errors.New(why)
	}
	if log == nil {
		log = slog.Default()
	}
	dev, err := cu.GetDevice(0)
	if err != nil {
		return nil, err
	}
	name, _ := dev.Name()
	major, err := dev.Attribute(cu.ComputeCapabilityMajor)
	if err != nil {
		return nil, fmt.Errorf("device query: %w", err)
	}
	minor, err := dev.Attribute(cu.ComputeCapabilityMinor)
	if err != nil {
		return nil, fmt.Errorf("device query: %w", err)
	}
	cc := major*10 + minor
	libMu.Lock()
	dirs := libDirs
	libMu.Unlock()
	drv := cu.Version()
	libs, err := cudalib.Load(cudalib.Options{Dirs: dirs, DriverVersion: max(drv, 0)})
	if err != nil {
		return nil, err
	}
	supported, err := libs.SupportedArchs()
	if err != nil {
		return nil, err
	}
	arch, err := chooseArch(cc, supported)
	if err != nil {
		return nil, err
	}
	ptx, err := libs.CompilePTX(kernelSource, "kernels.cu", fmt.Sprintf("--gpu-architecture=compute_%d", arch))
	if err != nil {
		return nil, fmt.Errorf("compiling the kernels for compute_%d: %w", arch, err)
	}
	ctx, err := dev.MakeContext(cu.SchedAuto)
	if err != nil {
		return nil, fmt.Errorf("CUDA context: %w", err)
	}
	d := &device{ctx: ctx, fns: map[string]cu.Function{}, libs: libs, arch: arch, cc: cc,
		name: fmt.Sprintf("cuda/%s (sm_%d)", name, cc)}
	if d.mod, err = cu.LoadData(ptx); err != nil {
		d.release()
		if cudaCode(err) == 222 { // UNSUPPORTED_PTX_VERSION
			return nil, fmt.Errorf("the driver (CUDA %d.%d) cannot load PTX from NVRTC %s: install a newer driver or point cuda_libs at the CUDA release the driver came with: %w",
				drv/1000, drv%1000/10, libs.NVRTCVersion, err)
		}
		return nil, fmt.Errorf("load kernels: %w", err)
	}
	for _, k := range kernelNames {
		if d.fns[k], err = d.mod.Function(k); err != nil {
			d.release()
			return nil, fmt.Errorf("kernel %s: %w", k, err)
		}
	}
	if d.bl, err = libs.NewBLAS(); err != nil {
		d.release()
		return nil, err
	}
	how := "PTX for the device's own architecture"
	if arch != cc {
		how = fmt.Sprintf("PTX for compute_%d, JIT-compiled forward by the driver (this NVRTC stops at compute_%d)", arch, supported[len(supported)-1])
	}
	log.Info("CUDA device opened", "device", d.name, "driver", fmt.Sprintf("%d.%d", drv/1000, drv%1000/10),
		"kernels", how, "cublas", libs.CUBLASPath, "cublas_version", libs.CUBLASVersion.String(),
		"nvrtc", libs.NVRTCPath, "nvrtc_version", libs.NVRTCVersion.String())
	return d, nil
}

func (d *device) alloc(floats int) (cu.DevicePtr, error) {
	p, err := cu.MemAlloc(int64(max(floats, 1)) * 4)
	if err != nil {
		return 0, fmt.Errorf("GPU memory (%d MB): %w", floats*4>>20, d.check(err))
	}
	d.bufs = append(d.bufs, p)
	d.allocated += int64(max(floats, 1)) * 4
	return p, nil
}

// release frees everything the device holds, in the order CUDA needs: the
// cuBLAS handle while its context lives, memory, the module, the context.
// It is safe to call twice and on a half-built device.
func (d *device) release() {
	if d.released {
		return
	}
	d.released = true
	if d.bl != nil {
		d.bl.Close()
		d.bl = nil
	}
	for _, p := range d.bufs {
		cu.MemFree(p)
	}
	d.bufs = nil
	if d.mod != (cu.Module{}) {
		d.mod.Unload()
	}
	d.ctx.Destroy()
}

// enter locks the OS thread and makes the context current on it; the
// returned function undoes the lock.
func (d *device) enter() (func(), error) {
	runtime.LockOSThread()
	if d.released {
		runtime.UnlockOSThread()
		return nil, errors.New("CUDA engine closed (model reloaded)")
	}
	if d.failed != nil {
		runtime.UnlockOSThread()
		return nil, d.failed
	}
	if err := cu.SetCurrentContext(d.ctx); err != nil {
		runtime.UnlockOSThread()
		return nil, d.check(err)
	}
	return runtime.UnlockOSThread, nil
}

// allocHalves allocates room for n 16-bit values.
func (d *device) allocHalves(n int) (cu.DevicePtr, error) { return d.alloc((n + 1) / 2) }

// uploadHalves copies host halves (bit patterns) to the device.
func (d *device) uploadHalves(p cu.DevicePtr, h []uint16) error {
	if len(h) == 0 {
		return nil
	}
	return d.check(cu.MemcpyHtoD(p, unsafe.Pointer(&h[0]), int64(len(h)*2)))
}

// downloadHalves copies device halves to the host.
func (d *device) downloadHalves(h []uint16, p cu.DevicePtr) error {
	if len(h) == 0 {
		return nil
	}
	return d.check(cu.MemcpyDtoH(unsafe.Pointer(&h[0]), p, int64(len(h)*2)))
}

// halfSupport says why the device cannot run the fp16 GEMMs, or "": fp16
// arithmetic starts with compute capability 5.3 (the Nano), and the
// cuBLAS must have cublasGemmEx.
func (d *device) halfSupport() string {
	if d.cc < 53 {
		return fmt.Sprintf("compute capability %d.%d has no fp16 arithmetic (5.3 or newer needed)", d.cc/10, d.cc%10)
	}
	if !d.bl.HasGemmEx() {
		return "this cuBLAS has no cublasGemmEx"
	}
	return ""
}

// upload copies host floats to the device.
func (d *device) upload(p cu.DevicePtr, x []float32) error {
	if len(x) == 0 {
		return nil
	}
	return d.check(cu.MemcpyHtoD(p, unsafe.Pointer(&x[0]), int64(len(x)*4)))
}

// download copies device floats to the host.
func (d *device) download(x []float32, p cu.DevicePtr) error {
	if len(x) == 0 {
		return nil
	}
	return d.check(cu.MemcpyDtoH(unsafe.Pointer(&x[0]), p, int64(len(x)*4)))
}

// sgemm computes row-major C = op(A)·op(B) + beta·C with column-major
// cuBLAS: a row-major matrix is its transpose in column-major, so
// Cᵀ = op(B)ᵀ·op(A)ᵀ is one cuBLAS call with the operands swapped.
func (d *device) sgemm(tA, tB bool, m, n, k int, a cu.DevicePtr, lda int, b cu.DevicePtr, ldb int, beta float32, c cu.DevicePtr, ldc int) error {
	if d.failed != nil {
		return d.failed
	}
	return d.poisoned(d.bl.Sgemm(tB, tA, n, m, k, 1, uintptr(b), ldb, uintptr(a), lda, beta, uintptr(c), ldc))
}

// gemmHalf is sgemm's row-major C = op(A)·op(B) with A and B in halves
// and C in fp32 (beta 0), through cublasGemmEx computing in fp32.
func (d *device) gemmHalf(tA, tB bool, m, n, k int, a cu.DevicePtr, lda int, b cu.DevicePtr, ldb int, c cu.DevicePtr, ldc int) error {
	if d.failed != nil {
		return d.failed
	}
	return d.poisoned(d.bl.GemmEx(tB, tA, n, m, k, 1, uintptr(b), cudalib.TypeF16, ldb, uintptr(a), cudalib.TypeF16, lda, 0, uintptr(c), cudalib.TypeF32, ldc))
}

func (d *device) launch(name string, n int, args ...any) error {
	if d.failed != nil {
		return d.failed
	}
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
	if err := d.fns[name].Launch(max(grid, 1), 1, 1, block, 1, 1, 0, cu.NoStream, params); err != nil {
		return fmt.Errorf("kernel %s: %w", name, d.check(err))
	}
	return nil
}

func off(p cu.DevicePtr, floats int) cu.DevicePtr { return p + cu.DevicePtr(floats*4) }

func offHalf(p cu.DevicePtr, halves int) cu.DevicePtr { return p + cu.DevicePtr(halves*2) }

// convForward runs a (grouped) convolution for n images: bias fill, then
// per group im2col into col and one cuBLAS GEMM.
func (d *device) convForward(l *model.Layer, in, out model.Shape3, src, dst cu.DevicePtr, n int, w, bias, col cu.DevicePtr) error {
	cinG, coutG := in.C/l.Groups, l.Out/l.Groups
	kk, p := cinG*l.Kernel*l.Kernel, out.H*out.W
	il, ol := in.Len(), out.Len()
	for j := 0; j < n; j++ {
		xj, yj := off(src, j*il), off(dst, j*ol)
		if err := d.launch("fill_rows", l.Out*p, yj, bias, l.Out, p); err != nil {
			return err
		}
		for g := 0; g < l.Groups; g++ {
			if err := d.launch("im2col", kk*p, xj, in.H, in.W, g*cinG, cinG, l.Kernel, l.Stride, l.Pad, out.H, out.W, col); err != nil {
				return err
			}
			if err := d.sgemm(false, false, coutG, p, kk, off(w, g*coutG*kk), kk, col, p, 1, off(yj, g*coutG*p), p); err != nil {
				return err
			}
		}
	}
	return nil
}

// convForwardHalf is convForward in fp16: per group im2col into halves and
// one GEMM of the row-scaled half weights into fp32 planes, then each
// output channel scaled back and its bias added.
func (d *device) convForwardHalf(l *model.Layer, in, out model.Shape3, src, dst cu.DevicePtr, n int, w halfWeights, bias, colH cu.DevicePtr) error {
	cinG, coutG := in.C/l.Groups, l.Out/l.Groups
	kk, p := cinG*l.Kernel*l.Kernel, out.H*out.W
	il, ol := in.Len(), out.Len()
	for j := 0; j < n; j++ {
		xj, yj := off(src, j*il), off(dst, j*ol)
		for g := 0; g < l.Groups; g++ {
			if err := d.launch("im2col_h", kk*p, xj, in.H, in.W, g*cinG, cinG, l.Kernel, l.Stride, l.Pad, out.H, out.W, colH); err != nil {
				return err
			}
			if err := d.gemmHalf(false, false, coutG, p, kk, offHalf(w.w, g*coutG*kk), kk, colH, p, off(yj, g*coutG*p), p); err != nil {
				return err
			}
		}
		if err := d.launch("scale_bias_rows", l.Out*p, yj, w.scale, bias, l.Out, p); err != nil {
			return err
		}
	}
	return nil
}
