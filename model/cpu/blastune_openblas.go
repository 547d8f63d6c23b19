//go:build cgo && !purego

package cpu

import (
	"os"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/cpu"
)

// CPUFeatures are what the OpenBLAS kernel choice looks at.
type CPUFeatures struct {
	AVX512     bool // F, DQ, BW and VL: what OpenBLAS's SkylakeX kernels use
	AVX512BF16 bool // Cooper Lake, Sapphire Rapids, Zen 4 and later
	AVX2FMA    bool
}

// HostFeatures reads this CPU's features.
func HostFeatures() CPUFeatures {
	x := cpu.X86
	return CPUFeatures{
		AVX512:     x.HasAVX512F && x.HasAVX512DQ && x.HasAVX512BW && x.HasAVX512VL,
		AVX512BF16: x.HasAVX512BF16,
		AVX2FMA:    x.HasAVX2 && x.HasFMA,
	}
}

// avx512Cores are OpenBLAS's kernels built for AVX-512.
var avx512Cores = map[string]bool{"SkylakeX": true, "Cooperlake": true, "SapphireRapids": true}

// genericCores are OpenBLAS's fallbacks for a CPU it does not recognise.
var genericCores = map[string]bool{"Prescott": true, "Core2": true, "Katmai": true, "Coppermine": true, "Northwood": true, "Banias": true, "generic": true}

// BLASCoreFor picks the OpenBLAS kernel for a CPU with features f when
// OpenBLAS chose core, or "" to keep OpenBLAS's choice. The choice goes by
// the CPU's features, not its name: OpenBLAS 0.3.21 (Debian bookworm)
// names recent CPUs wrongly both ways — a generic Prescott kernel on some
// Xeons (3–6× slower), and its AVX2 Haswell kernel on AVX-512 EPYCs it
// takes for an older Zen (measured on one: fp32 1.34× onnxruntime at
// batch 8 with Haswell, 0.99× with SkylakeX or Cooperlake). So: a CPU with
// AVX-512 gets an AVX-512 kernel (Cooperlake where it has BF16, whose
// kernels are SkylakeX's plus the bf16 ones), a CPU with AVX2 and FMA gets
// at least Haswell, and a kernel OpenBLAS chose within those is kept.
func BLASCoreFor(core string, f CPUFeatures) string {
	switch {
	case avx512Cores[core]:
		return ""
	case f.AVX512 && f.AVX512BF16:
		return "Cooperlake"
	case f.AVX512:
		return "SkylakeX"
	case f.AVX2FMA && genericCores[core]:
		return "Haswell"
	}
	return ""
}

// TuneBLAS re-executes the program with OPENBLAS_CORETYPE set when
// OpenBLAS runs a kernel below what this CPU runs (BLASCoreFor) — because
// its detection misnamed the CPU, or because OPENBLAS_CORETYPE names a
// weaker kernel (a machine image may set it for all its programs; the one
// this was found on set Haswell on an AVX-512 EPYC). The kernel is chosen
// at library load, so a re-exec is the only way. LEAFWATCH_BLAS_TUNE=off
// keeps whatever OpenBLAS runs. BLASTuneNote says afterwards what was
// replaced. The programs and the test binaries of the packages that time
// the engine call it first, so `go test -bench` measures the kernel users
// get. The reference tests pass with every kernel chosen here.
func TuneBLAS() {
	if runtime.GOARCH != "amd64" || os.Getenv("LEAFWATCH_BLAS_TUNE") == "off" {
		return
	}
	core := BLASCoreFor(blasCoreName(), HostFeatures())
	if core == "" || os.Getenv("OPENBLAS_CORETYPE") == core {
		return // right already, or asked for and not taken: no loop
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	env := []string{"OPENBLAS_CORETYPE=" + core, tunedFromEnv + "=" + blasCoreName()}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OPENBLAS_CORETYPE=") && !strings.HasPrefix(kv, tunedFromEnv+"=") {
			env = append(env, kv)
		}
	}
	syscall.Exec(exe, os.Args, env) // only returns on failure: carry on untuned
}

// tunedFromEnv carries, across TuneBLAS's re-exec, the kernel it replaced.
const tunedFromEnv = "LEAFWATCH_BLAS_TUNED_FROM"

// BLASTuneNote says which OpenBLAS kernel TuneBLAS replaced and why, for
// the programs' logs; "" when it replaced none.
func BLASTuneNote() string {
	from := os.Getenv(tunedFromEnv)
	if from == "" {
		return ""
	}
	return "OpenBLAS ran its " + from + " kernel on a CPU that runs " + blasCoreName() + "'s; switched to " + blasCoreName() +
		" (LEAFWATCH_BLAS_TUNE=off keeps OpenBLAS's own choice or OPENBLAS_CORETYPE)"
}
