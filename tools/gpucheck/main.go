// Command gpucheck is the GPU self-check (make gpu-check): it reports the
// CUDA device, checks that the CUDA engine gives the CPU engine's
// probabilities on both AlexNet variants and several batch sizes, runs a
// short benchmark, and prints pass/fail and ms/image.
package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"time"

	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/model/gpu"
)

func main() {
	model.TuneBLAS()
	ok, why := gpu.Available()
	if !ok {
		fmt.Println("FAIL: no CUDA:", why)
		os.Exit(1)
	}
	ctx := context.Background()
	failed := false
	for _, v := range model.Variants() {
		m, err := model.NewRandom(v, 38, 7)
		if err != nil {
			fmt.Println("FAIL:", err)
			os.Exit(1)
		}
		e, err := gpu.Select(m, gpu.CUDA, model.Options{MaxBatch: 8}, nil)
		if err != nil {
			fmt.Println("FAIL:", err)
			os.Exit(1)
		}
		cpu := model.NewClassifier(m, model.Options{MaxBatch: 8})
		fmt.Printf("%s on %s\n", v, e.Engine())
		for _, n := range []int{1, 8} {
			rng := rand.New(rand.NewPCG(uint64(n), 2))
			x := make([]float32, n*m.InputLen())
			for i := range x {
				x[i] = float32(rng.NormFloat64())
			}
			a, b := make([]float32, n*38), make([]float32, n*38)
			if err := e.Probabilities(ctx, x, n, a); err != nil {
				fmt.Println("FAIL:", err)
				os.Exit(1)
			}
			cpu.Probabilities(ctx, x, n, b)
			d := 0.0
			for i := range a {
				d = math.Max(d, math.Abs(float64(a[i]-b[i])))
			}
			const reps = 50
			start := time.Now()
			for i := 0; i < reps; i++ {
				e.Probabilities(ctx, x, n, a)
			}
			ms := float64(time.Since(start).Microseconds()) / 1000 / float64(reps*n)
			verdict := "pass"
			if d > 1e-4 {
				verdict, failed = "FAIL", true
			}
			fmt.Printf("  batch %d: max |cuda-cpu| = %.2g  %s   %.2f ms/image\n", n, d, verdict, ms)
		}
		e.Close()
	}
	if failed {
		fmt.Println("FAIL")
		os.Exit(1)
	}
	fmt.Println("PASS")
}
