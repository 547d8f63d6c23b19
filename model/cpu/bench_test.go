package cpu

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/leafwatch/leafwatch/model"
)

// procStatusKB reads a field such as VmRSS or VmHWM from /proc/self/status.
func procStatusKB(field string) float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			v, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return v
		}
	}
	return 0
}

func benchForward(b *testing.B, v model.Variant, batch int, prec model.Precision) {
	// The previous sub-benchmarks' models are garbage now: hand their
	// memory back, so the RSS reported below is this classifier's (the
	// process's high-water mark, reported before, climbed row by row).
	// FreeOSMemory collects first.
	debug.FreeOSMemory()
	m, err := model.NewRandom(v, 38, 1)
	if err != nil {
		b.Fatal(err)
	}
	// As leafwatchd builds its CPU engine: the fp32 weights held in
	// another form dropped, and their memory handed back.
	c := NewClassifier(m, model.Options{MaxBatch: batch, Precision: prec, ReleaseWeights: true})
	debug.FreeOSMemory()
	x := randInput(rand.New(rand.NewPCG(1, 1)), batch*m.InputLen())
	probs := make([]float32, batch*38)
	ctx := context.Background()
	c.Probabilities(ctx, x, batch, probs) // warm: build the runner
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if err := c.Probabilities(ctx, x, batch, probs); err != nil {
			b.Fatal(err)
		}
	}
	el := time.Since(start)
	imgs := float64(b.N * batch)
	b.ReportMetric(float64(el.Microseconds())/1000/imgs, "ms/image")
	b.ReportMetric(imgs/el.Seconds(), "images/s")
	b.ReportMetric(procStatusKB("VmRSS")/1024, "RSS_MB")
	runtime.KeepAlive(c)
}

func BenchmarkForward(b *testing.B) {
	fmt.Println("blas:", BLASInfo(), "threads:", ThreadsInfo())
	for _, v := range model.Variants() {
		for _, n := range []int{1, 8} {
			for _, p := range []model.Precision{model.FP32, model.FP16, model.BF16, model.INT8} {
				b.Run(string(v)+"/batch"+strconv.Itoa(n)+"/"+string(p), func(b *testing.B) { benchForward(b, v, n, p) })
			}
		}
	}
}

// BenchmarkSteadyStateRSS classifies 1,000 images one at a time and reports
// the resident set after 100 and after 1,000: flat means no per-inference
// garbage accumulates.
func BenchmarkSteadyStateRSS(b *testing.B) {
	m, err := model.NewRandom(model.TorchVision, 38, 1)
	if err != nil {
		b.Fatal(err)
	}
	c := NewClassifier(m, model.Options{MaxBatch: 1, ReleaseWeights: true})
	debug.FreeOSMemory()
	x := randInput(rand.New(rand.NewPCG(1, 1)), m.InputLen())
	probs := make([]float32, 38)
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		var at100 float64
		for j := 1; j <= 1000; j++ {
			c.Probabilities(ctx, x, 1, probs)
			if j == 100 {
				at100 = procStatusKB("VmRSS")
			}
		}
		at1000 := procStatusKB("VmRSS")
		b.ReportMetric(at100/1024, "RSS@100_MB")
		b.ReportMetric(at1000/1024, "RSS@1000_MB")
		b.ReportMetric((at1000-at100)/1024, "growth_MB")
	}
}

// BenchmarkTrainStep measures full-network training (forward, backward,
// every layer trainable) at batch 16, in images/s.
func BenchmarkTrainStep(b *testing.B) {
	for _, v := range model.Variants() {
		b.Run(string(v)+"/batch16", func(b *testing.B) {
			m, _ := model.NewRandom(v, 38, 1)
			s := NewTrainSession(m, 16, rand.New(rand.NewPCG(1, 1)))
			x := randInput(rand.New(rand.NewPCG(2, 2)), 16*m.InputLen())
			labels := make([]int, 16)
			for i := range labels {
				labels[i] = i % 38
			}
			s.ZeroGrad()
			s.Step(x, labels, 0)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				s.ZeroGrad()
				if _, _, err := s.Step(x, labels, 0); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(16*b.N)/b.Elapsed().Seconds(), "images/s")
		})
	}
}
