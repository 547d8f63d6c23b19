package cpu

import (
	"sync"
	"time"

	"github.com/leafwatch/leafwatch/model"
)

// Floor bounds one image's inference on this machine from below: the fully
// connected layers' weights must be read from memory once per image (they
// are far larger than any cache) and the convolutions' arithmetic done at
// no more than the best rate the machine's GEMM reaches. The benchmarks
// report our batch-1 time as a ratio to it (make bench); nothing in the
// engine uses it.
type Floor struct {
	ReadGBps   float64 // all cores reading a 256 MB buffer of random values, best of five passes
	GEMMGFLOPs float64 // the best of the network's convolutions as one im2col GEMM each, warm, all cores
	FCBytes    int64   // FC weight bytes read per image at the precision
	ConvFLOPs  float64 // the convolutions' multiply-adds ×2 per image, computed directly
}

// MS is the floor in milliseconds per image.
func (f Floor) MS() float64 {
	return float64(f.FCBytes)/f.ReadGBps/1e6 + f.ConvFLOPs/f.GEMMGFLOPs/1e6
}

// MeasureFloor measures the machine and counts m's work at precision p
// (which FC layers are reduced follows NewClassifier). It takes about a
// second and 256 MB while it runs.
func MeasureFloor(m *model.Model, p model.Precision) Floor {
	f := Floor{ReadGBps: readBandwidth(256 << 20), GEMMGFLOPs: convGEMMRate(m)}
	f.FCBytes, f.ConvFLOPs = work(m, p)
	return f
}

// work counts what one image needs: FC weight bytes at p and direct
// convolution FLOPs.
func work(m *model.Model, p model.Precision) (fcBytes int64, convFLOPs float64) {
	shapes := m.Shapes()
	for i, l := range m.Spec.Layers {
		in, out := shapes[i], shapes[i+1]
		switch l.Kind {
		case model.FC:
			n := int64(in.Len()) * int64(l.Out)
			fcBytes += n * int64(bytesPerWeight(p, n))
		case model.Conv:
			convFLOPs += 2 * float64(out.Len()) * float64(in.C/l.Groups*l.Kernel*l.Kernel)
		}
	}
	return fcBytes, convFLOPs
}

func bytesPerWeight(p model.Precision, n int64) int {
	if n < minQuantized {
		return 4
	}
	switch p {
	case model.FP16, model.BF16:
		return 2
	case model.INT8:
		return 1
	}
	return 4
}

// readBandwidth is the best of five passes of all workers reading their
// share of a buffer of random values (a constant buffer reads faster than
// memory on some hosts, which seem to deduplicate its pages).
func readBandwidth(bytes int) float64 {
	buf := make([]float32, bytes/4)
	x := uint32(2463534242)
	for i := range buf {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		buf[i] = float32(x>>8) * 0x1p-24
	}
	w := workers()
	best := time.Duration(1 << 62)
	for pass := 0; pass < 5; pass++ {
		var wg sync.WaitGroup
		t0 := time.Now()
		for k := 0; k < w; k++ {
			part := buf[len(buf)*k/w : len(buf)*(k+1)/w]
			wg.Add(1)
			go func() {
				defer wg.Done()
				readSum(part)
			}()
		}
		wg.Wait()
		best = min(best, time.Since(t0))
	}
	return float64(bytes) / best.Seconds() / 1e9
}

// convGEMMRate runs each convolution of m at batch 1 as the one GEMM of
// its im2col form (all groups' rows as one product) on all cores, warm,
// and returns the best GFLOP/s.
func convGEMMRate(m *model.Model) float64 {
	blasSingleThread()
	shapes := m.Shapes()
	best := 0.0
	for i, l := range m.Spec.Layers {
		if l.Kind != model.Conv {
			continue
		}
		in, out := shapes[i], shapes[i+1]
		rows, p, kk := l.Out, out.H*out.W, in.C/l.Groups*l.Kernel*l.Kernel
		a, b, c := make([]float32, rows*kk), make([]float32, kk*p), make([]float32, rows*p)
		for j := range a {
			a[j] = float32(j%7) * 0.01
		}
		for j := range b {
			b[j] = float32(j%5) * 0.01
		}
		sgemmPar(false, false, rows, p, kk, 1, a, kk, b, p, 0, c, p)
		const reps = 10
		t0 := time.Now()
		for r := 0; r < reps; r++ {
			sgemmPar(false, false, rows, p, kk, 1, a, kk, b, p, 0, c, p)
		}
		best = max(best, 2*float64(rows*p*kk)*reps/time.Since(t0).Seconds()/1e9)
	}
	return best
}
