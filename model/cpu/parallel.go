package cpu

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/leafwatch/leafwatch/model"
)

// The engine runs its own threads: OpenBLAS is set to one thread (see
// blasSingleThread) and every large GEMM, GEMV and im2col is split into
// one piece per core, run by a fixed set of worker goroutines. OpenBLAS's
// own threads spin-wait after each call; on a 2-core board they competed
// with the Go code between calls (a profile showed ~30% of the time in
// libc, waiting) and batch 8 was no faster per image than batch 1.

// piece is one part of a split kernel. Jobs are plain values sent over a
// channel so that splitting allocates nothing.
type piece struct {
	kind pieceKind
	gemm gemmArgs
	i2c  im2colArgs
	fcq  fcqArgs
	pool poolArgs
	wino winoArgs
	s2d  s2dArgs
	wg   *split
}

// split tracks the pieces of one split that the workers still run.
type split struct {
	pending atomic.Int32 // polled by a spinning caller (spin.go)
	wg      sync.WaitGroup
}

func (p *piece) finish() {
	p.wg.pending.Add(-1)
	p.wg.wg.Done()
}

type pieceKind uint8

const (
	pieceGemm pieceKind = iota
	pieceGemv
	pieceIm2col
	pieceFCQ
	pieceMaxPool
	pieceLRN
	pieceWinoIn
	pieceWinoGemms
	pieceWinoOut
	pieceSpaceToDepth
)

// poolArgs max-pools channels [c0, c1) of n images (inference: no
// argmax), or normalises (LRN) positions [c0, c1) of every channel: LRN
// mixes channels, so it is split by pixels instead.
type poolArgs struct {
	l       *model.Layer
	in, out model.Shape3
	x, y    []float32
	n       int
	c0, c1  int
}

type gemmArgs struct {
	transA, transB bool
	m, n, k        int
	alpha          float32
	a              []float32
	lda            int
	b              []float32
	ldb            int
	beta           float32
	c              []float32
	ldc            int
}

// im2colArgs unrolls count images, xStride floats apart in x, into col
// side by side (colStride columns apart).
type im2colArgs struct {
	x                                []float32
	h, w, c0, k, stride, pad, oh, ow int
	g0, g1                           int // kernel rows (see im2colRows)
	col                              []float32
	ld                               int
	count, xStride, colStride        int
}

func (p *piece) run() {
	switch p.kind {
	case pieceGemm:
		g := &p.gemm
		sgemm(g.transA, g.transB, g.m, g.n, g.k, g.alpha, g.a, g.lda, g.b, g.ldb, g.beta, g.c, g.ldc)
	case pieceGemv:
		g := &p.gemm
		sgemv(g.m, g.n, g.alpha, g.a, g.b, g.beta, g.c)
	case pieceFCQ:
		a := &p.fcq
		fcQuantized(a.q, a.n, a.x, a.bias, a.y, a.o0, a.o1)
	case pieceMaxPool:
		a := &p.pool
		il, ol := a.in.Len(), a.out.Len()
		for j := 0; j < a.n; j++ {
			maxPoolInfer(a.l, a.in, a.out, a.x[j*il:], a.y[j*ol:], a.c0, a.c1)
		}
	case pieceLRN:
		a := &p.pool
		il := a.in.Len()
		for j := 0; j < a.n; j++ {
			lrnInfer(a.l, a.in, a.x[j*il:(j+1)*il], a.y[j*il:(j+1)*il], a.c0, a.c1)
		}
	case pieceWinoIn:
		p.wino.runIn()
	case pieceWinoGemms:
		p.wino.runGemms()
	case pieceWinoOut:
		p.wino.runOut()
	case pieceSpaceToDepth:
		p.s2d.run()
	case pieceIm2col:
		a := &p.i2c
		for j := 0; j < a.count; j++ {
			im2colFast(a.x[j*a.xStride:], a.h, a.w, a.c0, a.k, a.stride, a.pad, a.oh, a.ow, a.col[j*a.colStride:], a.ld, a.g0, a.g1)
		}
	}
}

var (
	poolOnce  sync.Once
	poolJobs  chan piece
	poolWidth int
	// wakeMeasured is measureWake's answer when the pool started (0 on
	// one core, where nothing spins), for logs and benchmarks.
	wakeMeasured time.Duration
	// wgFree holds the WaitGroups of splits in flight. A free list, not a
	// sync.Pool: a pool may drop what it holds at any GC (and randomly
	// under -race), which would allocate in the middle of an inference.
	wgFree chan *split
)

// workers is how many pieces a kernel is split into: GOMAXPROCS, read once.
func workers() int {
	poolOnce.Do(func() {
		poolWidth = runtime.GOMAXPROCS(0)
		blasSingleThread()
		poolJobs = make(chan piece, 4*poolWidth)
		wgFree = make(chan *split, 64)
		for range cap(wgFree) {
			wgFree <- new(split)
		}
		if poolWidth > 1 {
			wakeMeasured = measureWake()
			spinGrace = spinGraceFor(wakeMeasured)
		}
		for i := 1; i < poolWidth; i++ { // the caller runs a piece too
			go worker()
		}
	})
	return poolWidth
}

// runPieces runs pieces[0] on the caller and the rest on the workers, and
// waits for all of them.
func runPieces(pieces []piece) {
	if len(pieces) == 1 {
		pieces[0].run()
		return
	}
	var wg *split
	select {
	case wg = <-wgFree:
	default: // more splits in flight than the list holds
		wg = new(split)
	}
	wg.wg.Add(len(pieces) - 1)
	wg.pending.Store(int32(len(pieces) - 1))
	for i := 1; i < len(pieces); i++ {
		pieces[i].wg = wg
		poolJobs <- pieces[i]
	}
	pieces[0].run()
	awaitPieces(wg)
	wg.wg.Wait()
	select {
	case wgFree <- wg:
	default:
	}
}

// minSplitFlops: below this a GEMM runs whole; splitting costs more than
// it saves (fc8, the last layer's small products).
const minSplitFlops = 1 << 21

// maxPieces bounds the stack array of pieces a split uses.
const maxPieces = 64

// sgemmPar is sgemm split over the cores along the larger dimension of C.
func sgemmPar(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	w := min(workers(), maxPieces)
	if w == 1 || m*n*k < minSplitFlops {
		sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	var buf [maxPieces]piece
	pieces := buf[:0]
	if n >= m { // split the columns of C: op(B)'s columns
		step := roundUp((n+w-1)/w, 16)
		for j := 0; j < n; j += step {
			nj := min(step, n-j)
			var bj []float32
			if transB {
				bj = b[j*ldb:]
			} else {
				bj = b[j:]
			}
			pieces = append(pieces, piece{kind: pieceGemm, gemm: gemmArgs{transA, transB, m, nj, k, alpha, a, lda, bj, ldb, beta, c[j:], ldc}})
		}
	} else { // split the rows of C: op(A)'s rows
		step := roundUp((m+w-1)/w, 4)
		for i := 0; i < m; i += step {
			mi := min(step, m-i)
			var ai []float32
			if transA {
				ai = a[i:]
			} else {
				ai = a[i*lda:]
			}
			pieces = append(pieces, piece{kind: pieceGemm, gemm: gemmArgs{transA, transB, mi, n, k, alpha, ai, lda, b, ldb, beta, c[i*ldc:], ldc}})
		}
	}
	runPieces(pieces)
}

// sgemvPar is y = alpha·A·x + beta·y (A row-major m×n) split by rows: one
// image through a fully connected layer streams its weights once, and two
// cores read memory faster than one.
func sgemvPar(m, n int, alpha float32, a, x []float32, beta float32, y []float32) {
	w := min(workers(), maxPieces)
	if w == 1 || m*n < minSplitFlops {
		sgemv(m, n, alpha, a, x, beta, y)
		return
	}
	var buf [maxPieces]piece
	pieces := buf[:0]
	step := roundUp((m+w-1)/w, 16)
	for i := 0; i < m; i += step {
		mi := min(step, m-i)
		pieces = append(pieces, piece{kind: pieceGemv, gemm: gemmArgs{m: mi, n: n, alpha: alpha, a: a[i*n:], b: x, beta: beta, c: y[i:]}})
	}
	runPieces(pieces)
}

func roundUp(v, to int) int { return (v + to - 1) / to * to }

// maxPoolPar pools n images (inference) split over the cores by channels.
func maxPoolPar(l *model.Layer, in, out model.Shape3, n int, x, y []float32) {
	w := min(workers(), maxPieces)
	var buf [maxPieces]piece
	pieces := buf[:0]
	step := (in.C + w - 1) / w
	for c := 0; c < in.C; c += step {
		pieces = append(pieces, piece{kind: pieceMaxPool, pool: poolArgs{l: l, in: in, out: out, x: x, y: y, n: n, c0: c, c1: min(in.C, c+step)}})
	}
	runPieces(pieces)
}

// lrnPar normalises n images (inference) split over the cores by pixels:
// at batch 1 the bvlc network's two LRN layers ran on one core while the
// other waited (split: 0.25 → 0.15 and 0.15 → 0.11 ms, alternating in one
// process).
func lrnPar(l *model.Layer, in model.Shape3, n int, x, y []float32) {
	w := min(workers(), maxPieces)
	hw := in.H * in.W
	var buf [maxPieces]piece
	pieces := buf[:0]
	step := roundUp((hw+w-1)/w, 16) // whole vectors per piece
	for p := 0; p < hw; p += step {
		pieces = append(pieces, piece{kind: pieceLRN, pool: poolArgs{l: l, in: in, out: in, x: x, y: y, n: n, c0: p, c1: min(hw, p+step)}})
	}
	runPieces(pieces)
}
