package daemon

import (
	"context"

	"github.com/leafwatch/leafwatch/model"
)

// batcher merges the classifications of cameras that sample at the same
// moment into one engine call: while the engine works on one camera's
// frame, the requests that arrive wait anyway, and are then run together.
// Nothing waits on purpose — a camera alone goes straight through — so no
// camera is delayed beyond the engine time it would have waited for. A
// bigger batch streams the fully connected weights once for more images
// and gives the later convolutions wider GEMMs. The gain is modest because
// a camera's 7 tiles already share one pass: 4 cameras × 7 tiles went from
// 8.3 to 8.8 frames/s on 2 cores (BenchmarkMultiCameraThroughput).
type batcher struct {
	in      chan *classifyReq
	maxImgs int
	buf     []float32
}

type classifyReq struct {
	e    model.Engine
	x    []float32
	n    int
	topK int
	il   int // floats per image
	done chan classifyRes
}

type classifyRes struct {
	preds []model.Prediction
	err   error
}

// mergedBatch is the most images one merged call carries.
const mergedBatch = 4 * model.DefaultMaxBatch

func newBatcher() *batcher {
	return &batcher{in: make(chan *classifyReq), maxImgs: mergedBatch}
}

// classify runs a request through the batcher; ctx ends the wait to be
// accepted. An accepted request is always answered (the engine call runs
// under the capture context, so it too ends early at shutdown), and
// classify waits for the answer: the caller's images and its hold on the
// engine must outlive the engine call that reads them.
func (b *batcher) classify(ctx context.Context, e model.Engine, x []float32, n, topK int) ([]model.Prediction, error) {
	r := &classifyReq{e: e, x: x, n: n, topK: topK, il: e.Model().InputLen(), done: make(chan classifyRes, 1)}
	select {
	case b.in <- r:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	res := <-r.done
	return res.preds, res.err
}

// run serves requests until ctx ends.
func (b *batcher) run(ctx context.Context) {
	var next *classifyReq
	for {
		first := next
		next = nil
		if first == nil {
			select {
			case first = <-b.in:
			case <-ctx.Done():
				return
			}
		}
		group := []*classifyReq{first}
		total := first.n
	gather: // what is already waiting, same engine, within the limit
		for total < b.maxImgs {
			select {
			case r := <-b.in:
				if r.e != first.e || total+r.n > b.maxImgs || r.topK != first.topK {
					next = r
					break gather
				}
				group = append(group, r)
				total += r.n
			default:
				break gather
			}
		}
		b.serve(ctx, group, total)
	}
}

func (b *batcher) serve(ctx context.Context, group []*classifyReq, total int) {
	first := group[0]
	if len(group) == 1 {
		preds, err := first.e.Classify(ctx, first.x, first.n, first.topK)
		first.done <- classifyRes{preds, err}
		return
	}
	il := first.il
	if cap(b.buf) < total*il {
		b.buf = make([]float32, total*il)
	}
	x := b.buf[:0]
	for _, r := range group {
		x = append(x, r.x[:r.n*il]...)
	}
	preds, err := first.e.Classify(ctx, x, total, first.topK)
	at := 0
	for _, r := range group {
		if err != nil {
			r.done <- classifyRes{err: err}
			continue
		}
		r.done <- classifyRes{preds: preds[at : at+r.n]}
		at += r.n
	}
}
