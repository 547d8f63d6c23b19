// Command gpucheck is the GPU self-check (make gpu-check, and the devcheck
// bundle's run.sh): it reports the CUDA device and the cuBLAS and NVRTC it
// bound, checks that the CUDA engine gives the CPU engine's probabilities
// on both AlexNet variants, and prints ms/image at several batch sizes.
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

// Result is one variant at one batch size.
type Result struct {
	Variant     string  `json:"variant"`
	Batch       int     `json:"batch"`
	MaxDiff     float64 `json:"max_abs_diff_vs_cpu"`
	MSPerImage  float64 `json:"ms_per_image"`
	Pass        bool    `json:"pass"`
	Engine      string  `json:"engine"`
	OpenSeconds float64 `json:"open_seconds"` // context, NVRTC compile, weight upload
}

// Report is what -out writes.
type Report struct {
	Results []Result `json:"results"`
	// Probe is the torchvision model's probabilities for ProbeInput (seeded
	// N(0,1) input, batch 1), for comparison with PyTorch.
	Probe []float32 `json:"probe_probabilities"`
	Pass  bool      `json:"pass"`
}

const usage = `Usage: gpucheck [OPTIONS]

The GPU self-check for a Leafwatch CUDA build: report the CUDA device and
the cuBLAS and NVRTC libraries found, check that the CUDA engine gives the
CPU engine's probabilities on both AlexNet variants, and print ms/image at
several batch sizes. Prints PASS or FAIL; exits 1 on FAIL.

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
	ctx := context.Background()
	rep := &Report{Pass: true}
	for _, v := range model.Variants() {
		m, err := model.NewRandom(v, 38, 7)
		if err != nil {
			return nil, err
		}
		maxB := 1
		for _, n := range sizes {
			maxB = max(maxB, n)
		}
		start := time.Now()
		e, err := engine.Select(m, engine.CUDA, model.Options{MaxBatch: maxB}, log)
		if err != nil {
			return nil, err
		}
		open := time.Since(start).Seconds()
		cpu := cpu.NewClassifier(m, model.Options{MaxBatch: 8})
		fmt.Printf("%s on %s (opened in %.2f s)\n", v, e.Engine(), open)
		if v == model.TorchVision {
			probe, in := make([]float32, 38), ProbeInput(m.InputLen())
			if err := e.Probabilities(ctx, in, 1, probe); err != nil {
				return nil, err
			}
			rep.Probe = probe
			if save != "" {
				if err := m.Save(save); err != nil {
					return nil, err
				}
				raw := make([]byte, 4*len(in))
				for i, f := range in {
					binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(f))
				}
				if err := os.WriteFile(save+".input", raw, 0o644); err != nil {
					return nil, err
				}
			}
		}
		for _, n := range sizes {
			rng := rand.New(rand.NewPCG(uint64(n), 2))
			x := make([]float32, n*m.InputLen())
			for i := range x {
				x[i] = float32(rng.NormFloat64())
			}
			a, b := make([]float32, n*38), make([]float32, n*38)
			if err := e.Probabilities(ctx, x, n, a); err != nil {
				return nil, err
			}
			if err := cpu.Probabilities(ctx, x, n, b); err != nil {
				return nil, err
			}
			d := 0.0
			for i := range a {
				d = math.Max(d, math.Abs(float64(a[i]-b[i])))
			}
			t0 := time.Now()
			for i := 0; i < reps; i++ {
				if err := e.Probabilities(ctx, x, n, a); err != nil {
					return nil, err
				}
			}
			ms := float64(time.Since(t0).Microseconds()) / 1000 / float64(reps*n)
			r := Result{Variant: string(v), Batch: n, MaxDiff: d, MSPerImage: ms, Pass: d <= 1e-4 && !math.IsNaN(d), Engine: e.Engine(), OpenSeconds: open}
			rep.Results = append(rep.Results, r)
			verdict := "pass"
			if !r.Pass {
				verdict, rep.Pass = "FAIL", false
			}
			fmt.Printf("  batch %3d: max |cuda-cpu| = %.2g  %s   %.3f ms/image\n", n, d, verdict, ms)
		}
		e.Close()
	}
	return rep, nil
}
