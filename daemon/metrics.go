package daemon

import (
	"math"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"

	"github.com/leafwatch/leafwatch/daemon/fleet"
	"github.com/leafwatch/leafwatch/daemon/samples"
)

type metrics struct {
	reg        *prometheus.Registry
	samples    *prometheus.CounterVec
	drops      *prometheus.CounterVec
	decisions  *prometheus.CounterVec
	alerts     *prometheus.CounterVec
	inference  prometheus.Histogram
	reloadOK   prometheus.Counter
	reloadFail prometheus.Counter
	reloading  prometheus.Gauge
	modelInfo  *prometheus.GaugeVec
	engineInfo *prometheus.GaugeVec
	lastInfNS  atomic.Int64

	engineFallbacks prometheus.Counter
	keep            *samplesMetrics
	regionFallbacks *prometheus.CounterVec
	updateState     *prometheus.GaugeVec
	acceptance      *prometheus.GaugeVec
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry(),
		samples:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "leafwatch_frames_classified_total", Help: "Frames sampled and classified."}, []string{"camera"}),
		drops:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "leafwatch_frames_dropped_total", Help: "Samples skipped, by reason."}, []string{"camera", "reason"}),
		decisions:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "leafwatch_decisions_total", Help: "Decided labels per sample."}, []string{"camera", "label"}),
		alerts:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "leafwatch_alerts_total", Help: "Alert events queued."}, []string{"camera", "phase"}),
		inference:  prometheus.NewHistogram(prometheus.HistogramOpts{Name: "leafwatch_inference_seconds", Help: "Inference latency per frame (all tiles).", Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}),
		reloadOK:   prometheus.NewCounter(prometheus.CounterOpts{Name: "leafwatch_model_reloads_total", Help: "Successful model reloads."}),
		reloadFail: prometheus.NewCounter(prometheus.CounterOpts{Name: "leafwatch_model_reload_failures_total", Help: "Refused model reloads."}),
		reloading:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "leafwatch_model_reload_in_progress", Help: "1 while a model is being loaded (old and new weights both in memory)."}),
		modelInfo:  prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "leafwatch_model_info", Help: "The model version serving (value 1)."}, []string{"version"}),
		engineInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "leafwatch_engine_info", Help: "The inference engine serving (value 1)."}, []string{"engine"}),
		engineFallbacks: prometheus.NewCounter(prometheus.CounterOpts{Name: "leafwatch_engine_fallbacks_total",
			Help: "Times a failed engine (a lost CUDA context) was replaced by the CPU engine."}),
		keep: newSamplesMetrics(),
		regionFallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "leafwatch_region_fallbacks_total",
			Help: "Frames classified by their tiles (or whole) because no leaves could be found: no_colour (night, infrared, a grey camera) or no_vegetation."}, []string{"camera", "reason"}),
	}
	m.updateState = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "leafwatch_model_update_state",
		Help: "The model update's state (value 1): idle, available, downloading, verifying, evaluating, installed, refused, rolled_back, failed."}, []string{"state"})
	m.acceptance = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "leafwatch_model_acceptance_accuracy",
		Help: "Accuracy on this device's labelled samples at the last comparison of an offered model, for the serving model and the candidate."}, []string{"model"})
	m.reg.MustRegister(m.regionFallbacks, m.updateState, m.acceptance)
	m.reg.MustRegister(m.keep.collectors()...)
	m.reg.MustRegister(m.samples, m.drops, m.decisions, m.alerts, m.inference, m.reloadOK, m.reloadFail, m.reloading, m.modelInfo, m.engineInfo, m.engineFallbacks,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) register(d *Daemon) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "leafwatch_outbox_depth", Help: "Undelivered MQTT messages on disk."},
		func() float64 { return float64(d.pub.Outbox().Len()) }))
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "leafwatch_mqtt_connected", Help: "1 when the broker connection is up."},
		func() float64 { return b2f(d.pub.Connected()) }))
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "leafwatch_mqtt_reconnects_total", Help: "Broker connections re-established after a loss."},
		func() float64 { return float64(d.pub.Reconnects()) }))
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "leafwatch_outbox_write_failures_total", Help: "Outbox writes that failed (a full or broken disk); the messages waited in memory."},
		func() float64 { return float64(d.pub.OutboxWriteFailures()) }))
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "leafwatch_outbox_pending_in_memory", Help: "Durable messages held in memory because the outbox cannot be written."},
		func() float64 { return float64(d.pub.Pending()) }))
	if d.store != nil {
		sum := func(f func(s samplesSummaryView) float64) func() float64 {
			return func() float64 {
				s, err := d.samplesSummary()
				if err != nil {
					return math.NaN()
				}
				return f(samplesSummaryView(s))
			}
		}
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "leafwatch_samples_unlabelled", Help: "Kept samples waiting for a label."},
			sum(func(s samplesSummaryView) float64 { return float64(s.Unlabelled) })))
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "leafwatch_samples_labelled", Help: "Kept samples with a label (unsure and not a leaf included)."},
			sum(func(s samplesSummaryView) float64 { return float64(s.Total - s.Unlabelled) })))
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "leafwatch_samples_bytes", Help: "Disk the kept samples' images take."},
			sum(func(s samplesSummaryView) float64 { return float64(s.Bytes) })))
	}
	for _, c := range d.cams {
		src := c.src
		l := prometheus.Labels{"camera": c.cfg.Name}
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "leafwatch_camera_reconnects_total", Help: "Times the camera delivered frames again after losing them.", ConstLabels: l},
			func() float64 { return float64(src.Status().Reconnects) }))
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "leafwatch_camera_connect_failures_total", Help: "Opens that failed, and connections lost before their first frame.", ConstLabels: l},
			func() float64 { return float64(src.Status().ConnectFailures) }))
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "leafwatch_camera_frames_total", Help: "Frames captured.", ConstLabels: l},
			func() float64 { return float64(src.Status().Frames) }))
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "leafwatch_camera_connected", Help: "1 when the camera delivers frames.", ConstLabels: l},
			func() float64 { return b2f(src.Status().State == "connected") }))
	}
}

type samplesSummaryView = samples.Summary

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (m *metrics) setModel(v string) {
	m.modelInfo.Reset()
	m.modelInfo.WithLabelValues(v).Set(1)
}

func (m *metrics) setUpdate(s fleet.State) {
	m.updateState.Reset()
	m.updateState.WithLabelValues(s.State).Set(1)
	if a := s.Acceptance; a != nil && a.Set != "none" {
		m.acceptance.WithLabelValues("serving").Set(a.Serving)
		m.acceptance.WithLabelValues("candidate").Set(a.Candidate)
	}
}

func (m *metrics) setEngine(e string) {
	m.engineInfo.Reset()
	m.engineInfo.WithLabelValues(e).Set(1)
}

func (m *metrics) observeInference(d time.Duration) {
	m.inference.Observe(d.Seconds())
	m.lastInfNS.Store(int64(d))
}

func (m *metrics) lastInferenceMS() float64 {
	return math.Round(float64(m.lastInfNS.Load())/1e4) / 100
}

func (m *metrics) dropsTotal() float64 {
	var total float64
	mfs, _ := m.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "leafwatch_frames_dropped_total" {
			for _, mt := range mf.GetMetric() {
				total += counterValue(mt)
			}
		}
	}
	return total
}

func counterValue(mt *dto.Metric) float64 {
	if c := mt.GetCounter(); c != nil {
		return c.GetValue()
	}
	return 0
}
