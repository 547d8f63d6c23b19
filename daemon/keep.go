package daemon

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/leafwatch/leafwatch/daemon/samples"
	"github.com/leafwatch/leafwatch/internal/fieldset"
	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/mqtt"
)

// openSamples opens the samples store and prepares keeping. A store that
// cannot be opened (a read-only or full disk, a damaged database) turns
// keeping off with an error in the log: classification and alerts go on.
func (d *Daemon) openSamples() {
	st, err := samples.Open(samples.Dir(d.cfg.StateDir))
	if err != nil {
		d.samplesErr = err.Error()
		d.log.Error("samples: the store cannot be opened; keeping and labelling are off until it can (classification and alerts go on)", "err", err)
		return
	}
	d.store = st
	cams := map[string]samples.Config{}
	for _, c := range d.cfg.Cameras {
		cams[c.Name] = c.Keep
	}
	d.keeper = samples.NewKeeper(st, cams, samples.Options{MaxBytes: int64(d.cfg.Samples.MaxMB) << 20, FrameWidth: d.cfg.Samples.FrameWidth,
		Log: d.log, Metrics: d.met.keep})
}

// keep offers a sample's frame and regions to the keeper (after the
// sample was published: nothing here delays MQTT). The keeper may take
// the frame, giving the camera another Mat for its next one.
func (c *camRunner) keep(inf inference, d decision, at time.Time) {
	k := c.d.keeper
	if k == nil || !c.cfg.Keep.Enabled {
		return
	}
	o := samples.Offer{Camera: c.cfg.Name, Time: at, Frame: &c.frame, Alert: len(d.events) > 0, Chosen: d.best,
		Model: fieldset.ModelRef{Version: inf.m.Meta.Version, SHA256: inf.m.Meta.SHA256, Engine: inf.engine.e.Engine(), Precision: precisionOf(inf.engine.e)},
		Preprocess: fieldset.Preprocess{InputSize: inf.m.Meta.InputSize, Resize: inf.m.Meta.Resize, Mean: inf.m.Meta.Mean, Std: inf.m.Meta.Std,
			Regions: c.regionMode(), Tiling: c.tilingString()}}
	o.Regions = c.regions[:0]
	for i, b := range inf.boxes {
		p := inf.preds[i]
		decided := c.dec.Label(p.Best())
		o.Regions = append(o.Regions, samples.Region{Box: b, Kind: inf.kinds[i], Top: topN(p, inf.m.Meta.Labels, 5),
			Decided: decided, Threshold: c.dec.Threshold(p.Best().Label), Disease: IsDisease(decided)})
	}
	c.regions = o.Regions
	k.Offer(o)
}

// regionMode is how the frame was cut, for the sample's record.
func (c *camRunner) regionMode() string {
	if c.pp != nil && c.pp.Fallback() != "" {
		return "fallback:" + c.pp.Fallback()
	}
	if c.cfg.Regions == "leaves" {
		return "leaves"
	}
	if c.cfg.Tiling.Enabled() {
		return "tiles"
	}
	return "frame"
}

func (c *camRunner) tilingString() string {
	t := c.cfg.Tiling
	if !t.Enabled() {
		return ""
	}
	return fmt.Sprintf("%dx%d overlap %.2f full %v", t.Rows, t.Cols, t.Overlap, t.Full)
}

// topN is a prediction's n most probable classes, from all its
// probabilities (the engine's Top holds only top_k).
func topN(p model.Prediction, labels []string, n int) []fieldset.Scored {
	if len(p.Probs) == 0 {
		out := make([]fieldset.Scored, 0, len(p.Top))
		for _, s := range p.Top {
			out = append(out, fieldset.Scored{Label: s.Label, Prob: s.Prob})
		}
		return out
	}
	idx := make([]int, len(p.Probs))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		switch {
		case p.Probs[a] > p.Probs[b]:
			return -1
		case p.Probs[a] < p.Probs[b]:
			return 1
		}
		return 0
	})
	out := make([]fieldset.Scored, 0, n)
	for _, i := range idx[:min(n, len(idx))] {
		if i < len(labels) {
			out = append(out, fieldset.Scored{Label: labels[i], Prob: p.Probs[i]})
		}
	}
	return out
}

// precisionOf is the precision an engine computes in, for the samples'
// records: what the engine says (the CPU engine its FC weights', the CUDA
// engine fp16 or fp32 — fp32 where the GPU has no fp16), fp32 for an
// engine that does not say.
func precisionOf(e model.Engine) string {
	if c, ok := e.(interface{ Precision() model.Precision }); ok {
		return string(c.Precision())
	}
	return string(model.FP32)
}

// samplesMetrics are the keeper's counters.
type samplesMetrics struct {
	kept, skipped *prometheus.CounterVec
	evicted       prometheus.Counter
	writeFailures prometheus.Counter
	full          prometheus.Gauge
}

func newSamplesMetrics() *samplesMetrics {
	return &samplesMetrics{
		kept: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "leafwatch_samples_kept_total",
			Help: "Samples kept for labelling, by the rule that fired (a sample kept by two rules counts for each)."}, []string{"camera", "rule"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "leafwatch_samples_skipped_total",
			Help: "Regions a rule chose but that were not kept: duplicate, hourly_cap, per_frame_cap, busy, budget_full."}, []string{"camera", "reason"}),
		evicted: prometheus.NewCounter(prometheus.CounterOpts{Name: "leafwatch_samples_evicted_total",
			Help: "Unlabelled samples removed to stay within samples.max_mb (labelled ones never are)."}),
		writeFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "leafwatch_samples_write_failures_total",
			Help: "Samples that could not be written (a full or read-only disk)."}),
		full: prometheus.NewGauge(prometheus.GaugeOpts{Name: "leafwatch_samples_budget_full",
			Help: "1 while labelled samples alone fill samples.max_mb: keeping has stopped."}),
	}
}

func (m *samplesMetrics) Kept(camera, rule string) { m.kept.WithLabelValues(camera, rule).Inc() }
func (m *samplesMetrics) Skipped(camera, reason string) {
	m.skipped.WithLabelValues(camera, reason).Inc()
}
func (m *samplesMetrics) Evicted(n int)        { m.evicted.Add(float64(n)) }
func (m *samplesMetrics) WriteFailed()         { m.writeFailures.Inc() }
func (m *samplesMetrics) BudgetFull(full bool) { m.full.Set(b2f(full)) }
func (m *samplesMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.kept, m.skipped, m.evicted, m.writeFailures, m.full}
}

// summaryCache keeps the store's counts for a few seconds: metrics
// scrapes, the MQTT sensor and the status page all ask.
type summaryCache struct {
	mu  sync.Mutex
	at  time.Time
	sum samples.Summary
	err error
}

const summaryMaxAge = 5 * time.Second

// samplesSummary is the store's counts, at most summaryMaxAge old.
func (d *Daemon) samplesSummary() (samples.Summary, error) {
	if d.store == nil {
		return samples.Summary{}, fmt.Errorf("samples store unavailable: %s", d.samplesErr)
	}
	c := &d.sumCache
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) < summaryMaxAge && !c.at.IsZero() {
		return c.sum, c.err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.sum, c.err = d.store.Summarise(ctx)
	c.at = time.Now()
	return c.sum, c.err
}

// forgetSummary makes the next samplesSummary read the store again (after
// labelling, so the page's counts move at once).
func (d *Daemon) forgetSummary() {
	d.sumCache.mu.Lock()
	d.sumCache.at = time.Time{}
	d.sumCache.mu.Unlock()
}

// labelPageURL is the labelling page's address as the log and MQTT give it.
func (d *Daemon) labelPageURL() string {
	scheme := "http"
	if d.certs != nil {
		scheme = "https"
	}
	host := d.cfg.Listen
	if h, p, ok := strings.Cut(host, ":"); ok && (h == "" || h == "0.0.0.0" || h == "[::]") {
		host = d.cfg.Device + ":" + p
	}
	return scheme + "://" + host + "/label"
}

// samplesLoop publishes the number of samples waiting for a label
// (retained, for Home Assistant) whenever it changes, checked every 10 s.
func (d *Daemon) samplesLoop(ctx context.Context) {
	if d.store == nil {
		return
	}
	last := -1
	publish := func() bool {
		sum, err := d.samplesSummary()
		if err != nil || (sum.Unlabelled == last) {
			return true
		}
		labelled := 0
		for l, n := range sum.Labelled {
			if l != fieldset.Unsure {
				labelled += n
			}
		}
		if d.pub.Samples(mqtt.SamplesState{Waiting: sum.Unlabelled, Labelled: labelled, Total: sum.Total, URL: d.labelPageURL(),
			Full: d.keeper != nil && d.keeper.Full()}) == nil {
			last = sum.Unlabelled
		}
		return true
	}
	publish()
	every(ctx, 10*time.Second, publish)
}
