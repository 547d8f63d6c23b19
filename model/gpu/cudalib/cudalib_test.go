//go:build cuda

package cudalib

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestVersionOrder(t *testing.T) {
	roots := []string{"/usr/local/cuda-11.4", "/usr/local/cuda-12.10", "/usr/local/cuda-12.6", "/usr/local/cuda-13"}
	slices.SortFunc(roots, func(a, b string) int { return compareVersions(versionOf(b), versionOf(a)) })
	want := []string{"/usr/local/cuda-13", "/usr/local/cuda-12.10", "/usr/local/cuda-12.6", "/usr/local/cuda-11.4"}
	if !slices.Equal(roots, want) {
		t.Errorf("order %v, want %v", roots, want)
	}
	if d := DefaultDirs(); d[0] != "" || !slices.Contains(d, "/usr/local/cuda/lib64") {
		t.Errorf("default search %v lacks the loader path or /usr/local/cuda/lib64", d)
	}
}

// TestLoadExplains: a folder without the libraries, a file that is not a
// library, and libraries newer than the driver each give an error that
// names what was tried and what to do.
func TestLoadExplains(t *testing.T) {
	empty := t.TempDir()
	_, err := Load(Options{Dirs: []string{empty}, DriverVersion: 12040})
	if err == nil || !strings.Contains(err.Error(), "no usable cuBLAS") || !strings.Contains(err.Error(), "libcublas.so.12") ||
		!strings.Contains(err.Error(), "skipped libcublas.so.13") || !strings.Contains(err.Error(), EnvDirs) {
		t.Errorf("empty folder: %v", err)
	}
	bad := t.TempDir()
	os.WriteFile(filepath.Join(bad, "libcublas.so.11"), []byte("not an ELF file"), 0o644)
	_, err = Load(Options{Dirs: []string{bad}, DriverVersion: 11040})
	if err == nil || !strings.Contains(err.Error(), "found but unusable") {
		t.Errorf("broken library: %v", err)
	}
	t.Setenv(EnvDirs, empty+": "+bad)
	if d := DirsFromEnv(); !slices.Equal(d, []string{empty, bad}) {
		t.Errorf("%s parsed as %q", EnvDirs, d)
	}
}
