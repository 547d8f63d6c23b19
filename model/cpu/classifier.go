package cpu

import (
	"context"
	"fmt"
	"runtime"

	"github.com/leafwatch/leafwatch/model"
)

// Classifier runs inference on a Model from any number of goroutines. The
// model's weights are shared; each concurrent inference borrows a runner
// with its own reusable activation buffers.
type Classifier struct {
	m        *model.Model
	prec     model.Precision
	q        []*qfc         // per layer: the large FC layers' streaming weights, or nil
	wino     []*winoWeights // per layer: Winograd filters of conv1–5, or nil
	maxBatch int
	idle     chan *runner
	slots    chan struct{} // a token per runner not yet built
}

// minQuantized is the smallest FC layer (weights) stored in reduced
// precision; the last layer stays fp32 (small, and it sets the margins).
const minQuantized = 1 << 20

// NewClassifier prepares inference on m. An unknown precision is treated
// as fp32; callers validate it with ParsePrecision first. It panics on a
// model whose weights another engine released: a programming error.
func NewClassifier(m *model.Model, opt model.Options) *Classifier {
	if err := m.Whole("new classifier"); err != nil {
		panic(err)
	}
	if opt.MaxBatch <= 0 {
		opt.MaxBatch = model.DefaultMaxBatch
	}
	if opt.Workers <= 0 {
		opt.Workers = 1
	}
	opt.Workers = min(opt.Workers, runtime.GOMAXPROCS(0)*4)
	c := &Classifier{m: m, maxBatch: opt.MaxBatch, prec: model.FP32,
		idle:  make(chan *runner, opt.Workers),
		slots: make(chan struct{}, opt.Workers)}
	if p, _ := model.ParsePrecision(string(opt.Precision)); p != model.FP32 {
		c.prec = p
	}
	if c.prec != model.FP32 || streamFP32 {
		c.q = make([]*qfc, len(m.Spec.Layers))
		for i, l := range m.Spec.Layers {
			if w := m.Params[l.Name+".weight"]; l.Kind == model.FC && len(w.Data) >= minQuantized {
				c.q[i] = quantizeFC(c.prec, w.Data, w.Shape[0], w.Shape[1])
			}
		}
	}
	c.wino = make([]*winoWeights, len(m.Spec.Layers))
	for i, l := range m.Spec.Layers {
		if winogradFits(&l) {
			c.wino[i] = newWinoWeights(&l, m.Shapes()[i], m.Shapes()[i+1], m.Params[l.Name+".weight"].Data)
		}
	}
	if opt.ReleaseWeights {
		c.release()
	}
	for i := 0; i < opt.Workers; i++ {
		c.slots <- struct{}{}
	}
	return c
}

// release drops the model's fp32 weights that the classifier holds in
// another form. The tensors stay in the map (their shapes describe the
// model) with nil data, which Model.Released reports.
func (c *Classifier) release() {
	for i, l := range c.m.Spec.Layers {
		if (c.q != nil && c.q[i] != nil && c.q[i].prec != model.FP32) || c.wino[i] != nil {
			c.m.Params[l.Name+".weight"].Data = nil
		}
	}
}

// Model returns the model this classifier serves (with its weights
// released if Options.ReleaseWeights said so).
func (c *Classifier) Model() *model.Model { return c.m }

// Engine names the compute backend, for logs and metrics.
func (c *Classifier) Engine() string {
	if c.prec != model.FP32 {
		return "cpu/" + blasName + "+" + string(c.prec) + "-fc"
	}
	return "cpu/" + blasName
}

// Precision is the FC weights' precision.
func (c *Classifier) Precision() model.Precision { return c.prec }

func (c *Classifier) acquire(ctx context.Context) (*runner, error) {
	select {
	case r := <-c.idle:
		return r, nil
	default:
	}
	select {
	case r := <-c.idle:
		return r, nil
	case <-c.slots:
		// Buffers are built lazily so an idle daemon holds only the weights.
		r := newRunner(c.m, c.maxBatch, false, nil)
		r.q, r.wino = c.q, c.wino
		return r, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Probabilities classifies n images laid out as NCHW float32 in x and
// writes n×Classes probabilities into probs. It allocates nothing once the
// classifier is warm.
func (c *Classifier) Probabilities(ctx context.Context, x []float32, n int, probs []float32) error {
	il, k := c.m.InputLen(), c.m.Classes()
	if len(x) < n*il {
		return fmt.Errorf("input holds %d values, %d images of %dx%d need %d", len(x), n, c.m.Spec.InputSize, c.m.Spec.InputSize, n*il)
	}
	if len(probs) < n*k {
		return fmt.Errorf("output holds %d values, %d images × %d classes need %d", len(probs), n, k, n*k)
	}
	r, err := c.acquire(ctx)
	if err != nil {
		return err
	}
	defer func() { c.idle <- r }()
	for s := 0; s < n; s += c.maxBatch {
		if err := ctx.Err(); err != nil {
			return err
		}
		b := min(c.maxBatch, n-s)
		done := spinning(b)
		logits := r.forward(x[s*il:(s+b)*il], b)
		done()
		out := probs[s*k : (s+b)*k]
		copy(out, logits)
		softmax(b, k, out)
	}
	return nil
}

// Classify returns the top-k predictions of n images.
func (c *Classifier) Classify(ctx context.Context, x []float32, n, topK int) ([]model.Prediction, error) {
	return model.ClassifyWith(ctx, c, x, n, topK)
}
