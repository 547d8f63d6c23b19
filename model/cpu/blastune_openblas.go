//go:build cgo && !purego

package cpu

import (
	"os"
	"runtime"
	"syscall"

	"golang.org/x/sys/cpu"
)

// BLASCoreFor picks an OpenBLAS kernel for this CPU when OpenBLAS's own
// detection fell back to a generic one: "SkylakeX" with AVX-512, "Haswell"
// with AVX2, "" otherwise (keep what OpenBLAS chose).
func BLASCoreFor(generic, avx512, avx2 bool) string {
	switch {
	case !generic:
		return ""
	case avx512:
		return "SkylakeX"
	case avx2:
		return "Haswell"
	}
	return ""
}

// TuneBLAS re-executes the program with OPENBLAS_CORETYPE set when
// OpenBLAS picked a generic kernel on a CPU it did not recognise (Debian
// bookworm's 0.3.21 on recent Xeons: 3–6× slower). The kernel is chosen at
// library load, so a re-exec is the only way. It returns without doing
// anything when OPENBLAS_CORETYPE is already set, when
// LEAFWATCH_BLAS_TUNE=off, or when the detection was fine. The reference
// tests pass with the chosen kernels.
func TuneBLAS() {
	if runtime.GOARCH != "amd64" || os.Getenv("OPENBLAS_CORETYPE") != "" || os.Getenv("LEAFWATCH_BLAS_TUNE") == "off" {
		return
	}
	core := BLASCoreFor(BLASCoreIsGeneric(), cpu.X86.HasAVX512F && cpu.X86.HasAVX512DQ, cpu.X86.HasAVX2 && cpu.X86.HasFMA)
	if core == "" {
		return
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	env := append(os.Environ(), "OPENBLAS_CORETYPE="+core)
	syscall.Exec(exe, os.Args, env) // only returns on failure: carry on untuned
}
