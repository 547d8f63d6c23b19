package cpu

import (
	"fmt"
	"slices"
	"sync/atomic"
	"time"
	_ "unsafe" // go:linkname
)

// Between the pieces of a small forward pass the engine's threads spin
// instead of parking. A parked worker took 87–200 µs to start a piece on
// this VM (a futex wake of an idle virtual CPU), as long as a whole piece
// at batch 1, so splits there ran nearly serially; spinning for a bounded
// while after each piece (the worker, polling for the next one) and for
// the pieces of a split (the caller) keeps both threads on their CPUs.
// Batch 1, spinning and parked passes alternating in one process (400
// passes, on a slow hour): torchvision 11.3 → 10.6 ms/image with fp16 FC
// weights and 13.7 → 12.9 in fp32, bvlc 12.6 → 11.8 and 15.5 → 14.7
// (−5 to −7%; on a faster hour torchvision fp16 8.4 → 7.7); batch 2 −5
// and −9% (fp16). At batch 4 spinning cost 2–7% and at batch 8 4–10%
// (cause not found: not spinning after pieces over 1 ms did not remove
// it), so only passes of at most spinBatch images spin.

// spinBatch is the largest batch whose forward pass spins.
var spinBatch = 2

// spinGrace bounds one spin: a worker's wait for its next piece, or a
// caller's for the rest of its split, before parking as usual. It was 200
// µs, tuned to this VM's wake-ups; a machine wakes its threads faster or
// slower, so it is twice the wake-up measured when the pool starts
// (measureWake), within [minSpin, maxSpin]: long enough to cover one
// wake-up, and no longer than spinning can save.
var spinGrace = 200 * time.Microsecond

const (
	minSpin = 20 * time.Microsecond
	maxSpin = 500 * time.Microsecond
)

// ThreadsInfo says how the engine's threads wait, for logs: the pool's
// width, the wake-up measured when it started and the spin bound chosen.
func ThreadsInfo() string {
	w := workers()
	if w < 2 {
		return "1 thread"
	}
	return fmt.Sprintf("%d threads, wake-up %v, spin %v", w, wakeMeasured.Round(time.Microsecond), spinGrace.Round(time.Microsecond))
}

// spinGraceFor is the spin bound for a measured wake-up.
func spinGraceFor(wake time.Duration) time.Duration {
	return min(max(2*wake, minSpin), maxSpin)
}

// measureWake is how long a parked goroutine takes to start
// running on another thread while the sender keeps its own busy — what a
// worker's piece waits before it starts, as the caller runs its own piece
// meanwhile — each after a pause long enough for the runtime to put its
// idle threads to sleep (as the engine's workers sleep between frames):
// 87–200 µs on the VM the engine was first tuned on (a futex wake of an
// idle virtual CPU), a few µs on bare metal. About 25 ms, once, when the
// pool starts.
func measureWake() time.Duration {
	const rounds = 40
	start := make(chan time.Time)
	var lat atomic.Int64
	go func() {
		for t0 := range start {
			lat.Store(int64(time.Since(t0)))
		}
	}()
	got := make([]time.Duration, rounds)
	for i := range got {
		time.Sleep(500 * time.Microsecond)
		lat.Store(0)
		t0 := time.Now()
		start <- t0
		// Busy, as a caller running its piece is, so the receiver must
		// start on another thread; bounded for a machine that has none.
		for lat.Load() == 0 && time.Since(t0) < 20*time.Millisecond {
			procyield(20)
		}
		got[i] = time.Duration(lat.Load())
		if got[i] == 0 {
			got[i] = time.Since(t0)
		}
	}
	close(start)
	// The fastest: on this VM wake-ups come in two modes, 80–180 µs and
	// 2.8–2.9 ms, in phases of the host that last tens of milliseconds; a
	// spin cannot bridge the slow mode, so the fast one sets it.
	return slices.Min(got)
}

// spinners counts the forward passes in flight that spin.
var spinners atomic.Int32

// spinning marks a forward pass of n images as spinning (when n ≤
// spinBatch) until the returned func is called.
func spinning(n int) (done func()) {
	if n > spinBatch {
		return func() {}
	}
	spinners.Add(1)
	return stopSpinning
}

func stopSpinning() { spinners.Add(-1) }

// procyield executes the CPU's spin-wait hint (PAUSE, YIELD) n times: the
// runtime's own, as sync.Mutex spins with it.
//
//go:linkname procyield runtime.procyield
func procyield(n uint32)

// worker runs pieces from poolJobs, polling for the next one for a while
// after each while a spinning pass is in flight.
func worker() {
	for p := range poolJobs {
		for {
			p.run()
			p.finish()
			var ok bool
			if p, ok = nextPiece(); !ok {
				break
			}
		}
	}
}

// nextPiece waits up to spinGrace for a piece without parking.
func nextPiece() (piece, bool) {
	if spinners.Load() == 0 {
		return piece{}, false
	}
	deadline := time.Now().Add(spinGrace)
	for {
		select {
		case p := <-poolJobs:
			return p, true
		default:
		}
		if spinners.Load() == 0 || time.Now().After(deadline) {
			return piece{}, false
		}
		procyield(20)
	}
}

// awaitPieces spins up to spinGrace for the workers' pieces of split s.
func awaitPieces(s *split) {
	if spinners.Load() == 0 {
		return
	}
	for deadline := time.Now().Add(spinGrace); s.pending.Load() > 0 && time.Now().Before(deadline); {
		procyield(20)
	}
}
