// Command gpucheck is the GPU self-check (make gpu-check, and the devcheck
// bundle's run.sh): it reports the CUDA device and the cuBLAS and NVRTC it
// bound, checks that the CUDA engine gives the CPU engine's probabilities
// on both AlexNet variants in fp32 (to 1e-4) and in fp16 (against the CPU
// engine's fp16, to the agreement bar 0.005 and the same top-1), and
// prints ms/image and the device memory of each at several batch sizes.
//
// With -out it also writes its figures (gpucheck.json) and, with
// -save-model, the torchvision model it timed, so run.sh can time the same
// weights in PyTorch on the same card.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/leafwatch/leafwatch/internal/buildinfo"
	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/model/cpu"
	"github.com/leafwatch/leafwatch/model/engine"
	"github.com/leafwatch/leafwatch/model/gpu"
)

// Result is one variant at one batch size in one precision.
type Result struct {
	Variant   string `json:"variant"`
	Precision string `json:"precision"`
	Batch     int    `json:"batch"`
	// MaxDiff is against the CPU engine at the same precision (fp16: its
	// fp16 FC weights), the bar 1e-4 in fp32 and 0.005 in fp16.
	MaxDiff    float64 `json:"max_abs_diff_vs_cpu"`
	Top1Differ int     `json:"top1_differ"` // images whose top-1 differs where the CPU's top two are > 0.01 apart
	MSPerImage float64 `json:"ms_per_image"`
	Pass       bool    `json:"pass"`
	Engine     string  `json:"engine"`
	// OpenSeconds is the engine's start: context, NVRTC compile, weights
	// converted and uploaded.
	OpenSeconds float64 `json:"open_seconds"`
	// DeviceMB is the device memory the engine allocated: weights,
	// activations and buffers for the largest batch (the CUDA context and
	// cuBLAS's workspace come on top, as PyTorch's figure leaves them out).
	DeviceMB float64 `json:"device_mb"`
}

// Report is what -out writes.
type Report struct {
	Results []Result `json:"results"`
	// Probe is the torchvision model's probabilities for ProbeInput (seeded
	// N(0,1) input, batch 1) in fp32, ProbeFP16 in fp16, for comparison
	// with PyTorch.
	Probe     []float32 `json:"probe_probabilities"`
	ProbeFP16 []float32 `json:"probe_probabilities_fp16"`
	Pass      bool      `json:"pass"`
}

// bars are the agreement each precision is held to against the CPU engine.
var bars = map[model.Precision]float64{model.FP32: 1e-4, model.FP16: 0.005}

const usage = `Usage: gpucheck [OPTIONS]

The GPU self-check for a Leafwatch CUDA build: report the CUDA device and
the cuBLAS and NVRTC libraries found, check that the CUDA engine gives the
CPU engine's probabilities on both AlexNet variants, in fp32 and in fp16,
and print ms/image and device memory at several batch sizes. Prints PASS
or FAIL; exits 1 on FAIL.

Options:
`

func main() {
	for _, a := range os.Args[1:] {
		switch a {
		case "-version", "--version":
			fmt.Println("gpucheck", buildinfo.String())
			return
		case "-h", "-help", "--help":
			// Standard output, for people and for help2man (the manual page).
			flag.CommandLine.SetOutput(os.Stdout)
		}
	}
	flag.Usage = func() {
		fmt.Fprint(flag.CommandLine.Output(), usage)
		flag.PrintDefaults()
		fmt.Fprintln(flag.CommandLine.Output(), "  -version\n    \tprint the version and exit")
	}
	batches := flag.String("batches", "1,8", "batch sizes to time, comma-separated")
	reps := flag.Int("reps", 30, "timed runs per batch size (after one warm-up)")
	out := flag.String("out", "", "folder for gpucheck.json")
	wx := flag.Bool("deny-write-execute", false, "refuse writable-and-executable memory to this process first (the kernel's W^X, as systemd's MemoryDenyWriteExecute=yes does), to find out whether CUDA works under it")
	save := flag.String("save-model", "", "write the torchvision model that was timed here (a Leafwatch checkpoint) and, beside it with .input appended, the probe input as raw little-endian float32")
	flag.Parse()
	cpu.TuneBLAS() // may re-exec with OPENBLAS_CORETYPE set
	if *wx {
		// PR_SET_MDWE (Linux 6.3+): from here on no mapping may become both
		// writable and executable, nor executable later — as under
		// MemoryDenyWriteExecute=yes, which systemd builds from seccomp.
		if err := unix.Prctl(unix.PR_SET_MDWE, unix.PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0); err != nil {
			fmt.Println("SKIP: -deny-write-execute: this kernel cannot refuse W+X memory (PR_SET_MDWE needs Linux 6.3):", err)
			os.Exit(3)
		}
		fmt.Println("write-and-execute memory refused for this process (PR_SET_MDWE)")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ok, why := gpu.Available()
	if !ok {
		fmt.Println("FAIL: no CUDA:", why)
		os.Exit(1)
	}
	var sizes []int
	for _, s := range strings.Split(*batches, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Println("FAIL: -batches:", s)
			os.Exit(2)
		}
		sizes = append(sizes, n)
	}
	rep, err := check(sizes, *reps, *save, log)
	if err != nil {
		fmt.Println("FAIL:", err)
		os.Exit(1)
	}
	if *out != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(filepath.Join(*out, "gpucheck.json"), b, 0o644); err != nil {
			fmt.Println("FAIL:", err)
			os.Exit(1)
		}
	}
	if !rep.Pass {
		fmt.Println("FAIL")
		os.Exit(1)
	}
	fmt.Println("PASS")
}

// ProbeInput is the input whose probabilities go into the report.
func ProbeInput(l int) []float32 {
	rng := rand.New(rand.NewPCG(2026, 11))
	x := make([]float32, l)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

func check(sizes []int, reps int, save string, log *slog.Logger) (*Report, error) {
	rep := &Report{Pass: true}
	maxB := slices.Max(append(sizes, 1))
	for _, v := range model.Variants() {
		m, err := model.NewRandom(v, 38, 7)
		if err != nil {
			return nil, err
		}
		if v == model.TorchVision && save != "" {
			if err := saveProbe(m, save); err != nil {
				return nil, err
			}
		}
		for _, prec := range []model.Precision{model.FP32, model.FP16} {
			if err := checkEngine(rep, m, prec, sizes, maxB, reps, log); err != nil {
				return nil, err
			}
		}
	}
	return rep, nil
}

// checkEngine opens the CUDA engine on m at prec, compares it with the CPU
// engine at the same precision and times it at each batch size.
func checkEngine(rep *Report, m *model.Model, prec model.Precision, sizes []int, maxB, reps int, log *slog.Logger) error {
	ctx := context.Background()
	start := time.Now()
	e, err := engine.Select(m, engine.CUDA, model.Options{MaxBatch: maxB, Precision: prec}, log)
	if err != nil {
		return err
	}
	defer e.Close()
	open := time.Since(start).Seconds()
	var devMB float64
	if d, ok := e.(interface{ DeviceBytes() int64 }); ok {
		devMB = float64(d.DeviceBytes()) / 1e6
	}
	if p, ok := e.(interface{ Precision() model.Precision }); ok && p.Precision() != prec {
		// A GPU older than 5.3 has no fp16 arithmetic: the engine runs
		// fp32 there by design (and warned why in the log).
		fmt.Printf("%s %s: skipped, the CUDA engine computes in %s on this GPU (see the warning above)\n", m.Spec.Variant, prec, p.Precision())
		return nil
	}
	ref := cpu.NewClassifier(m, model.Options{MaxBatch: 8, Precision: prec})
	fmt.Printf("%s %s on %s (opened in %.2f s, %.0f MB of device memory)\n", m.Spec.Variant, prec, e.Engine(), open, devMB)
	if m.Spec.Variant == model.TorchVision {
		probe := make([]float32, 38)
		if err := e.Probabilities(ctx, ProbeInput(m.InputLen()), 1, probe); err != nil {
			return err
		}
		if prec == model.FP16 {
			rep.ProbeFP16 = probe
		} else {
			rep.Probe = probe
		}
	}
	for _, n := range sizes {
		r, err := timeBatch(ctx, e, ref, n, reps)
		if err != nil {
			return err
		}
		r.Precision, r.OpenSeconds, r.DeviceMB = string(prec), open, devMB
		r.Pass = r.MaxDiff <= bars[prec] && r.Top1Differ == 0 && !math.IsNaN(r.MaxDiff)
		rep.Results = append(rep.Results, r)
		verdict := "pass"
		if !r.Pass {
			verdict, rep.Pass = "FAIL", false
		}
		fmt.Printf("  %s batch %3d: max |cuda-cpu| = %.2g (bar %g), top-1 differs on %d  %s   %.3f ms/image\n", prec, n, r.MaxDiff, bars[prec], r.Top1Differ, verdict, r.MSPerImage)
	}
	return nil
}

// timeBatch compares e with ref on n seeded images and times e.
func timeBatch(ctx context.Context, e, ref model.Engine, n, reps int) (Result, error) {
	m := e.Model()
	k := m.Classes()
	rng := rand.New(rand.NewPCG(uint64(n), 2))
	x := make([]float32, n*m.InputLen())
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	a, b := make([]float32, n*k), make([]float32, n*k)
	if err := e.Probabilities(ctx, x, n, a); err != nil {
		return Result{}, err
	}
	if err := ref.Probabilities(ctx, x, n, b); err != nil {
		return Result{}, err
	}
	r := Result{Variant: string(m.Spec.Variant), Batch: n, Engine: e.Engine()}
	for i := range a {
		r.MaxDiff = math.Max(r.MaxDiff, math.Abs(float64(a[i]-b[i])))
	}
	for j := 0; j < n; j++ {
		ga, gb := model.TopK(a[j*k:(j+1)*k], m.Meta.Labels, 1), model.TopK(b[j*k:(j+1)*k], m.Meta.Labels, 2)
		if ga[0].Index != gb[0].Index && gb[0].Prob-gb[1].Prob > 0.01 {
			r.Top1Differ++
		}
	}
	t0 := time.Now()
	for i := 0; i < reps; i++ {
		if err := e.Probabilities(ctx, x, n, a); err != nil {
			return Result{}, err
		}
	}
	r.MSPerImage = float64(time.Since(t0).Microseconds()) / 1000 / float64(reps*n)
	return r, nil
}

// saveProbe writes m and the probe input for torch_compare.py.
func saveProbe(m *model.Model, save string) error {
	if err := m.Save(save); err != nil {
		return err
	}
	in := ProbeInput(m.InputLen())
	raw := make([]byte, 4*len(in))
	for i, f := range in {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(f))
	}
	return os.WriteFile(save+".input", raw, 0o644)
}
