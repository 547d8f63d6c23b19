//go:build cuda

package cudalib

// #cgo LDFLAGS: -ldl
// #include <stdlib.h>
// #include "cudalib.h"
// static int lwCallVersion(lw_nvrtc *n, int *a, int *b) { return n->version(a, b); }
// static int lwCallNumArchs(lw_nvrtc *n, int *c) { return n->num_archs(c); }
// static int lwCallArchs(lw_nvrtc *n, int *out) { return n->archs(out); }
// static const char *lwCallErrString(lw_nvrtc *n, int r) { return n->error_string(r); }
// static int lwCallDestroyProgram(lw_nvrtc *n, void **p) { return n->destroy(p); }
// static int lwCallPTXSize(lw_nvrtc *n, void *p, size_t *s) { return n->ptx_size(p, s); }
// static int lwCallPTX(lw_nvrtc *n, void *p, char *out) { return n->ptx(p, out); }
// static int lwCallLogSize(lw_nvrtc *n, void *p, size_t *s) { return n->log_size(p, s); }
// static int lwCallLog(lw_nvrtc *n, void *p, char *out) { return n->log(p, out); }
// static int lwCallProperty(lw_cublas *b, int type, int *v) { return b->get_property(type, v); }
// static int lwCallCreate(lw_cublas *b, void **h) { return b->create(h); }
// static int lwCallDestroy(lw_cublas *b, void *h) { return b->destroy(h); }
import "C"

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unsafe"
)

// EnvDirs names the environment variable with folders (colon-separated)
// to take cuBLAS and NVRTC from instead of searching.
const EnvDirs = "LEAFWATCH_CUDA_LIBS"

// Version is a library's major.minor version.
type Version struct{ Major, Minor int }

func (v Version) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// Options steer the search.
type Options struct {
	// Dirs, when set, are the only folders searched (config cuda_libs or
	// LEAFWATCH_CUDA_LIBS); otherwise the loader path and the usual CUDA
	// and JetPack folders are.
	Dirs []string
	// DriverVersion is cuDriverGetVersion's answer (12040 for 12.4); 0 when
	// unknown. Libraries newer than the driver cannot run on it and are
	// skipped; among the rest the newest wins.
	DriverVersion int
}

// Libs are a bound cuBLAS and NVRTC. They stay loaded for the life of the
// process (unloading cuBLAS under live handles is unsafe).
type Libs struct {
	CUBLASPath, NVRTCPath       string
	CUBLASVersion, NVRTCVersion Version

	blas  *C.lw_cublas
	nvrtc *C.lw_nvrtc
}

// Describe is the one log line saying what was bound.
func (l *Libs) Describe() string {
	return fmt.Sprintf("cuBLAS %s (%s), NVRTC %s (%s)", l.CUBLASVersion, l.CUBLASPath, l.NVRTCVersion, l.NVRTCPath)
}

// cuBLAS and NVRTC sonames by CUDA major version, newest first. NVRTC kept
// the soname libnvrtc.so.11.2 for every CUDA 11 release from 11.2 on.
var (
	cublasNames = []soname{{13, "libcublas.so.13"}, {12, "libcublas.so.12"}, {11, "libcublas.so.11"}}
	nvrtcNames  = []soname{{13, "libnvrtc.so.13"}, {12, "libnvrtc.so.12"}, {11, "libnvrtc.so.11.2"}}
)

type soname struct {
	major int
	file  string
}

var (
	cacheMu sync.Mutex
	cache   = map[string]*Libs{}
)

// Load finds and binds cuBLAS and NVRTC. A successful load is remembered
// per search; a failed one is retried on the next call.
func Load(opt Options) (*Libs, error) {
	dirs := opt.Dirs
	if len(dirs) == 0 {
		dirs = DirsFromEnv()
	}
	explicit := len(dirs) > 0
	if !explicit {
		dirs = DefaultDirs()
	}
	key := fmt.Sprint(dirs, opt.DriverVersion)
	cacheMu.Lock()
	defer cacheMu.Unlock()
	if l, ok := cache[key]; ok {
		return l, nil
	}
	l := &Libs{blas: (*C.lw_cublas)(C.calloc(1, C.sizeof_lw_cublas)), nvrtc: (*C.lw_nvrtc)(C.calloc(1, C.sizeof_lw_nvrtc))}
	bpath, berr := find(cublasNames, dirs, opt.DriverVersion, explicit, "cuBLAS", func(file *C.char, e *C.char, n C.size_t) *C.char {
		return C.lw_cublas_open(l.blas, file, e, n)
	})
	npath, nerr := find(nvrtcNames, dirs, opt.DriverVersion, explicit, "NVRTC", func(file *C.char, e *C.char, n C.size_t) *C.char {
		return C.lw_nvrtc_open(l.nvrtc, file, e, n)
	})
	if err := errors.Join(berr, nerr); err != nil {
		C.free(unsafe.Pointer(l.blas))
		C.free(unsafe.Pointer(l.nvrtc))
		return nil, err
	}
	l.CUBLASPath, l.NVRTCPath = C.GoString(&l.blas.path[0]), C.GoString(&l.nvrtc.path[0])
	if l.CUBLASPath == "" {
		l.CUBLASPath = bpath
	}
	if l.NVRTCPath == "" {
		l.NVRTCPath = npath
	}
	var maj, mnr C.int
	if r := C.lwCallVersion(l.nvrtc, &maj, &mnr); r == 0 {
		l.NVRTCVersion = Version{int(maj), int(mnr)}
	}
	l.CUBLASVersion = Version{Major: sonameMajor(cublasNames, bpath)}
	if l.blas.get_property != nil {
		var v C.int
		if C.lwCallProperty(l.blas, 0, &v) == 0 {
			l.CUBLASVersion.Major = int(v)
		}
		if C.lwCallProperty(l.blas, 1, &v) == 0 {
			l.CUBLASVersion.Minor = int(v)
		}
	}
	cache[key] = l
	return l, nil
}

func sonameMajor(names []soname, path string) int {
	for _, s := range names {
		if strings.HasSuffix(path, s.file) {
			return s.major
		}
	}
	return 0
}

// find tries each soname the driver can run, newest first, in every
// folder, and returns the file that bound.
func find(names []soname, dirs []string, driver int, explicit bool, what string,
	open func(file, errbuf *C.char, n C.size_t) *C.char) (string, error) {
	drvMajor := driver / 1000
	var tried, broken []string
	var tooNew []string
	for _, s := range names {
		if drvMajor > 0 && s.major > drvMajor {
			tooNew = append(tooNew, s.file)
			continue
		}
		tried = append(tried, s.file)
		for _, d := range dirs {
			file := s.file
			if d != "" {
				file = filepath.Join(d, s.file)
				if _, err := os.Stat(file); err != nil {
					continue
				}
			}
			cfile := C.CString(file)
			errbuf := (*C.char)(C.calloc(1, 1024))
			why := open(cfile, errbuf, 1024)
			detail := C.GoString(errbuf)
			C.free(unsafe.Pointer(cfile))
			C.free(unsafe.Pointer(errbuf))
			if why == nil {
				return file, nil
			}
			// A file that exists but does not load (a missing dependency, a
			// wrong architecture) is worth reporting; "not found" in the
			// loader path is not.
			if d != "" || !strings.Contains(detail, "No such file") {
				msg := C.GoString(why)
				if detail != "" {
					msg += ": " + detail
				}
				broken = append(broken, fmt.Sprintf("%s (%s)", file, msg))
			}
		}
	}
	where := "the loader path and " + strings.Join(dirs[1:], ", ")
	if explicit {
		where = strings.Join(dirs, ", ")
	}
	msg := fmt.Sprintf("no usable %s: tried %s in %s", what, strings.Join(tried, ", "), where)
	if len(tooNew) > 0 {
		msg += fmt.Sprintf("; skipped %s (newer than the driver's CUDA %d.%d)", strings.Join(tooNew, ", "), drvMajor, driver%1000/10)
	}
	if len(broken) > 0 {
		msg += "; found but unusable: " + strings.Join(broken, "; ")
	}
	if explicit {
		msg += " (folders from cuda_libs / " + EnvDirs + ")"
	} else {
		msg += " (install the CUDA toolkit's libraries, or name their folder in cuda_libs / " + EnvDirs + ")"
	}
	return "", errors.New(msg)
}

// DirsFromEnv returns the folders in LEAFWATCH_CUDA_LIBS.
func DirsFromEnv() []string {
	var out []string
	for _, d := range strings.Split(os.Getenv(EnvDirs), ":") {
		if d = strings.TrimSpace(d); d != "" {
			out = append(out, d)
		}
	}
	return out
}

// DefaultDirs is the search without an override: the dynamic loader's own
// path first (""), then the CUDA toolkit folders, newest release first,
// including JetPack's targets/aarch64-linux/lib.
func DefaultDirs() []string {
	triplet := map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[runtime.GOARCH]
	dirs := []string{"", "/usr/local/cuda/lib64", "/usr/local/cuda/targets/" + triplet + "-linux/lib"}
	if triplet == "aarch64" {
		dirs = append(dirs, "/usr/local/cuda/targets/sbsa-linux/lib")
	}
	roots, _ := filepath.Glob("/usr/local/cuda-*")
	slices.SortFunc(roots, func(a, b string) int { return compareVersions(versionOf(b), versionOf(a)) })
	for _, r := range roots {
		dirs = append(dirs, filepath.Join(r, "lib64"), filepath.Join(r, "targets", triplet+"-linux", "lib"))
	}
	return append(dirs, "/usr/lib/"+triplet+"-linux-gnu")
}

func versionOf(dir string) []int {
	var v []int
	for _, p := range strings.Split(strings.TrimPrefix(filepath.Base(dir), "cuda-"), ".") {
		n, _ := strconv.Atoi(p)
		v = append(v, n)
	}
	return v
}

func compareVersions(a, b []int) int {
	for i := 0; i < max(len(a), len(b)); i++ {
		var x, y int
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			return x - y
		}
	}
	return 0
}

// nvrtcArchTable lists what NVRTC releases compile for, for releases
// without nvrtcGetSupportedArchs (before 11.2).
var nvrtcArchTable = []int{35, 37, 50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86}

// SupportedArchs lists the compute capabilities (major*10+minor) NVRTC
// compiles for, ascending.
func (l *Libs) SupportedArchs() ([]int, error) {
	if l.nvrtc.num_archs == nil || l.nvrtc.archs == nil {
		return slices.Clone(nvrtcArchTable), nil
	}
	var n C.int
	if r := C.lwCallNumArchs(l.nvrtc, &n); r != 0 {
		return nil, l.nvrtcErr("nvrtcGetNumSupportedArchs", r)
	}
	if n <= 0 || n > 256 {
		return nil, fmt.Errorf("NVRTC reports %d supported architectures", n)
	}
	out := make([]C.int, n)
	if r := C.lwCallArchs(l.nvrtc, &out[0]); r != 0 {
		return nil, l.nvrtcErr("nvrtcGetSupportedArchs", r)
	}
	archs := make([]int, n)
	for i, a := range out {
		archs[i] = int(a)
	}
	slices.Sort(archs)
	return archs, nil
}

func (l *Libs) nvrtcErr(what string, r C.int) error {
	return fmt.Errorf("%s: %s (NVRTC error %d)", what, C.GoString(C.lwCallErrString(l.nvrtc, r)), int(r))
}

// CompilePTX compiles CUDA C source to PTX. The compiler log comes back
// with any error.
func (l *Libs) CompilePTX(src, name string, options ...string) (string, error) {
	csrc, cname := C.CString(src), C.CString(name)
	defer C.free(unsafe.Pointer(csrc))
	defer C.free(unsafe.Pointer(cname))
	copts := make([]*C.char, len(options)+1)
	for i, o := range options {
		copts[i] = C.CString(o)
	}
	defer func() {
		for _, p := range copts {
			C.free(unsafe.Pointer(p))
		}
	}()
	// The options array is passed to C; it must not hold Go pointers to Go
	// memory, so it is copied into C memory.
	carr := (**C.char)(C.malloc(C.size_t(len(copts)) * C.size_t(unsafe.Sizeof(uintptr(0)))))
	defer C.free(unsafe.Pointer(carr))
	copy(unsafe.Slice(carr, len(copts)), copts)
	var prog unsafe.Pointer
	r := C.lw_nvrtc_compile(l.nvrtc, csrc, cname, C.int(len(options)), carr, &prog)
	if prog != nil {
		defer C.lwCallDestroyProgram(l.nvrtc, &prog)
	}
	if r != 0 {
		err := l.nvrtcErr("NVRTC compile", r)
		if prog != nil {
			if log := l.programLog(prog); log != "" {
				err = fmt.Errorf("%w\n%s", err, log)
			}
		}
		return "", err
	}
	var size C.size_t
	if r := C.lwCallPTXSize(l.nvrtc, prog, &size); r != 0 {
		return "", l.nvrtcErr("nvrtcGetPTXSize", r)
	}
	buf := (*C.char)(C.malloc(size + 1))
	defer C.free(unsafe.Pointer(buf))
	if r := C.lwCallPTX(l.nvrtc, prog, buf); r != 0 {
		return "", l.nvrtcErr("nvrtcGetPTX", r)
	}
	return C.GoStringN(buf, C.int(size)), nil
}

func (l *Libs) programLog(prog unsafe.Pointer) string {
	var size C.size_t
	if C.lwCallLogSize(l.nvrtc, prog, &size) != 0 || size <= 1 {
		return ""
	}
	buf := (*C.char)(C.malloc(size + 1))
	defer C.free(unsafe.Pointer(buf))
	if C.lwCallLog(l.nvrtc, prog, buf) != 0 {
		return ""
	}
	return strings.TrimSpace(C.GoString(buf))
}

// BLAS is one cuBLAS handle, bound to the context current when it was
// made. Close destroys it; it must be closed before that context is.
type BLAS struct {
	l *Libs
	h unsafe.Pointer
}

// StatusError is a cuBLAS status other than success.
type StatusError int

var cublasStatus = map[StatusError]string{1: "NOT_INITIALIZED", 3: "ALLOC_FAILED", 7: "INVALID_VALUE", 8: "ARCH_MISMATCH",
	11: "MAPPING_ERROR", 13: "EXECUTION_FAILED", 14: "INTERNAL_ERROR", 15: "NOT_SUPPORTED", 16: "LICENSE_ERROR"}

func (s StatusError) Error() string {
	if n, ok := cublasStatus[s]; ok {
		return "CUBLAS_STATUS_" + n
	}
	return fmt.Sprintf("cuBLAS status %d", int(s))
}

// NewBLAS creates a cuBLAS handle on the current context.
func (l *Libs) NewBLAS() (*BLAS, error) {
	var h unsafe.Pointer
	if r := C.lwCallCreate(l.blas, &h); r != 0 {
		return nil, fmt.Errorf("cublasCreate: %w", StatusError(r))
	}
	return &BLAS{l: l, h: h}, nil
}

// Close destroys the handle; closing twice is harmless.
func (b *BLAS) Close() error {
	if b == nil || b.h == nil {
		return nil
	}
	r := C.lwCallDestroy(b.l.blas, b.h)
	b.h = nil
	if r != 0 {
		return fmt.Errorf("cublasDestroy: %w", StatusError(r))
	}
	return nil
}

// op is cuBLAS's operation for a transposed or plain operand.
func op(t bool) C.int {
	if t {
		return 1 // CUBLAS_OP_T
	}
	return 0 // CUBLAS_OP_N
}

// Sgemm is cuBLAS's column-major C = alpha·op(A)·op(B) + beta·C on device
// pointers.
func (b *BLAS) Sgemm(transA, transB bool, m, n, k int, alpha float32, a uintptr, lda int, bb uintptr, ldb int, beta float32, c uintptr, ldc int) error {
	if b.h == nil {
		return errors.New("cuBLAS handle used after Close")
	}
	r := C.lw_sgemm(b.l.blas, b.h, op(transA), op(transB), C.int(m), C.int(n), C.int(k), C.float(alpha),
		C.ulonglong(a), C.int(lda), C.ulonglong(bb), C.int(ldb), C.float(beta), C.ulonglong(c), C.int(ldc))
	if r != 0 {
		return fmt.Errorf("cublasSgemm(m=%d n=%d k=%d lda=%d ldb=%d ldc=%d): %w", m, n, k, lda, ldb, ldc, StatusError(r))
	}
	return nil
}

// cuBLAS's enumerations for GemmEx (library_types.h, cublas_api.h; the
// same numbers from CUDA 11 to 13).
const (
	TypeF32 = 0 // CUDA_R_32F
	TypeF16 = 2 // CUDA_R_16F

	// ComputeF32 is CUBLAS_COMPUTE_32F: products and sums in fp32, the
	// inputs as they are (fp16 inputs run on tensor cores where the GPU has
	// them). Not ..._FAST_16F, which may round fp32 inputs down.
	ComputeF32  = 68
	algoDefault = -1 // CUBLAS_GEMM_DEFAULT
)

// HasGemmEx reports whether the library has cublasGemmEx.
func (b *BLAS) HasGemmEx() bool { return b.l.blas.gemm_ex != nil }

// GemmEx is cuBLAS's mixed-precision column-major C = alpha·op(A)·op(B) +
// beta·C with A, B and C of types at, bt and ct (TypeF16 or TypeF32),
// computed in fp32 (ComputeF32) with the default algorithm.
func (b *BLAS) GemmEx(transA, transB bool, m, n, k int, alpha float32, a uintptr, at, lda int, bb uintptr, bt, ldb int, beta float32, c uintptr, ct, ldc int) error {
	if b.h == nil {
		return errors.New("cuBLAS handle used after Close")
	}
	r := C.lw_gemm_ex(b.l.blas, b.h, op(transA), op(transB), C.int(m), C.int(n), C.int(k), C.float(alpha),
		C.ulonglong(a), C.int(at), C.int(lda), C.ulonglong(bb), C.int(bt), C.int(ldb), C.float(beta), C.ulonglong(c), C.int(ct), C.int(ldc),
		C.int(ComputeF32), C.int(algoDefault))
	if r != 0 {
		return fmt.Errorf("cublasGemmEx(m=%d n=%d k=%d lda=%d ldb=%d ldc=%d types %d/%d/%d compute %d): %w", m, n, k, lda, ldb, ldc, at, bt, ct, ComputeF32, StatusError(r))
	}
	return nil
}
