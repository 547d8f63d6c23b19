package systemd

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// installUnits writes the units, with the binary path pointed at a
// stand-in executable (the real one is not installed on a build machine),
// and the Jetson drop-in when jetson is set.
func installUnits(t *testing.T, jetson bool) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "leafwatchd")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"leafwatchd.service": strings.ReplaceAll(Unit, "/usr/local/bin/leafwatchd", bin),
		"leafwatchd.path":    PathUnit,
	}
	if jetson {
		files["leafwatchd.service.d/jetson.conf"] = JetsonDropIn
		files["leafwatchd.service.d/cuda.conf"] = CUDADropIn
	}
	for name, text := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestUnitVerifies runs systemd-analyze verify on the shipped units, alone
// and with the Jetson drop-in, and checks the settings the README promises.
func TestUnitVerifies(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed")
	}
	for _, jetson := range []bool{false, true} {
		dir := installUnits(t, jetson)
		out, err := exec.Command(sa, "verify", filepath.Join(dir, "leafwatchd.service"), filepath.Join(dir, "leafwatchd.path")).CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Fatalf("systemd-analyze verify (jetson drop-in %v): %v\n%s", jetson, err, out)
		}
	}
	for _, want := range []string{"Type=notify", "WatchdogSec=", "Restart=on-failure", "SupplementaryGroups=video", "StateDirectory=leafwatch",
		"NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "After=network-online.target nvargus-daemon.service",
		"ConditionPathExists=/var/lib/leafwatch/model.safetensors", "DeviceAllow=char-nvidia* rw", "UMask=0027",
		"SystemCallFilter=@system-service", "SystemCallFilter=~@privileged @resources", "SystemCallErrorNumber=EPERM",
		"ProcSubset=pid", "PrivateMounts=yes", "RemoveIPC=yes", "MemoryDenyWriteExecute=yes"} {
		if !strings.Contains(Unit, want) {
			t.Errorf("unit lacks %s", want)
		}
	}
	// Jetson: Argus's socket in /tmp, and the device groups as they are
	// named in /proc/devices (globs: nvhost-ctrl, nvhost-gpu, …).
	for _, want := range []string{"PrivateTmp=no", "DeviceAllow=char-nvhost* rw", "DeviceAllow=char-nvmap rw", "DeviceAllow=char-nvgpu* rw", "Wants=nvargus-daemon.service"} {
		if !strings.Contains(JetsonDropIn, want) {
			t.Errorf("Jetson drop-in lacks %s", want)
		}
	}
	for _, want := range []string{"ProcSubset=all", "MemoryDenyWriteExecute=no"} {
		if !strings.Contains(CUDADropIn, want) {
			t.Errorf("CUDA drop-in lacks %s", want)
		}
	}
}

var exposureRe = regexp.MustCompile(`Overall exposure level for leafwatchd.service: ([0-9.]+)`)

// TestUnitExposure keeps systemd's exposure score of the sandbox from
// creeping up (out of 10: at most 2.0 for the CPU unit, 2.5 with the
// Jetson and CUDA drop-ins).
func TestUnitExposure(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed")
	}
	for _, c := range []struct {
		jetson bool
		limit  float64
	}{{false, 2.0}, {true, 2.5}} {
		dir := installUnits(t, c.jetson)
		out, err := exec.Command(sa, "security", "--offline=true", filepath.Join(dir, "leafwatchd.service")).CombinedOutput()
		m := exposureRe.FindSubmatch(out)
		if m == nil {
			t.Skipf("systemd-analyze security --offline unsupported here: %v\n%s", err, out)
		}
		score, _ := strconv.ParseFloat(string(m[1]), 64)
		t.Logf("exposure (jetson drop-in %v): %.1f", c.jetson, score)
		if score > c.limit {
			t.Errorf("exposure %.1f above %.1f (jetson drop-in %v)", score, c.limit, c.jetson)
		}
	}
}
