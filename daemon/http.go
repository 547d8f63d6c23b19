package daemon

import (
	"encoding/json"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/leafwatch/leafwatch/mqtt"
	"github.com/leafwatch/leafwatch/vision"
)

func (d *Daemon) serveHTTP() (*http.Server, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", d.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.met.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /snapshot/{camera}", d.snapshot)
	mux.HandleFunc("GET /{$}", d.statusPage)
	d.labelRoutes(mux)
	ln, err := net.Listen("tcp", d.cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("http listen %s: %w", d.cfg.Listen, err)
	}
	remote := !IsLoopback(d.cfg.Listen)
	switch {
	case remote && d.auth == nil:
		d.log.Warn("the HTTP server (status page, snapshots, metrics) is reachable from the network without authentication: set http_auth.token_file or basic_auth_file", "listen", d.cfg.Listen)
	case remote && d.certs == nil:
		d.log.Warn("passwords and tokens cross the network in the clear: the HTTP server is reachable from the network with http_auth but without TLS; set http_tls.cert_file and key_file", "listen", d.cfg.Listen)
	}
	srv := &http.Server{Handler: d.auth.wrap(mux), ReadHeaderTimeout: 5 * time.Second}
	scheme := "http"
	if d.certs != nil {
		scheme = "https"
		srv.TLSConfig = d.certs.config()
		// The certificate comes from TLSConfig.GetCertificate (reloaded on
		// SIGHUP), hence no file names here.
		go srv.ServeTLS(ln, "", "")
	} else {
		go srv.Serve(ln)
	}
	d.log.Info("status page", "url", scheme+"://"+ln.Addr().String()+"/", "label_page", scheme+"://"+ln.Addr().String()+"/label", "auth", d.auth != nil)
	return srv, nil
}

type readiness struct {
	Ready  bool   `json:"ready"`
	Model  string `json:"model_version"`
	Engine string `json:"engine"`
	// EngineFallback says why the configured engine was replaced by the CPU.
	EngineFallback string                   `json:"engine_fallback,omitempty"`
	Broker         bool                     `json:"broker_connected"`
	Cameras        map[string]vision.Status `json:"cameras"`
	Reload         string                   `json:"last_reload_error,omitempty"`
	// OutboxError is set while the outbox cannot be written: durable
	// messages then wait in memory (OutboxPending).
	OutboxError   string `json:"outbox_error,omitempty"`
	OutboxPending int    `json:"outbox_pending_in_memory,omitempty"`
}

// readyz: ready when a model is loaded, the broker is connected and every
// camera delivers frames (or has finished its file).
func (d *Daemon) readyz(w http.ResponseWriter, r *http.Request) {
	e := d.engine()
	rd := readiness{Model: e.Model().Meta.Version, Engine: e.Engine(), Broker: d.pub.Connected(), Cameras: map[string]vision.Status{}}
	if f, ok := d.fallback.Load().(string); ok {
		rd.EngineFallback = f
	}
	rd.Ready = d.ready.Load() && rd.Broker
	for _, c := range d.cams {
		st := c.src.Status()
		rd.Cameras[c.cfg.Name] = st
		if st.State != vision.StateConnected && st.State != vision.StateEnded {
			rd.Ready = false
		}
	}
	if e, ok := d.lastError.Load().(string); ok {
		rd.Reload = e
	}
	if rd.OutboxError = d.pub.OutboxError(); rd.OutboxError != "" {
		rd.Ready = false
		rd.OutboxPending = d.pub.Pending()
	}
	w.Header().Set("Content-Type", "application/json")
	if !rd.Ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	json.NewEncoder(w).Encode(rd)
}

func (d *Daemon) snapshot(w http.ResponseWriter, r *http.Request) {
	for _, c := range d.cams {
		if c.cfg.Name == r.PathValue("camera") {
			if j := c.snapshotJPEG(); j != nil {
				w.Header().Set("Content-Type", "image/jpeg")
				w.Header().Set("Cache-Control", "no-store")
				w.Write(j)
				return
			}
		}
	}
	http.NotFound(w, r)
}

var statusTmpl = template.Must(template.New("status").Funcs(template.FuncMap{"pct": func(f float32) float64 { return float64(f) * 100 }}).Parse(`<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>Leafwatch — {{.Device}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;background:#f4f7f2;color:#1d2a1d}
h1{font-size:1.4em} .cam{background:#fff;border-radius:8px;padding:1em;margin-bottom:1.5em;box-shadow:0 1px 3px #0002}
.label{font-size:1.3em;font-weight:600} .alert{color:#c0261b} .ok{color:#237a2a} .unsure{color:#8a6d00}
img{max-width:100%;border-radius:4px} table{border-collapse:collapse;margin-top:.5em} td,th{padding:.2em .8em;text-align:left;border-bottom:1px solid #ddd}
.meta{color:#666;font-size:.9em}
</style></head><body>
<h1>Leafwatch · {{.Device}}</h1>
<p class="meta">model {{.Model}} · engine {{.Engine}} · broker {{if .Broker}}connected{{else}}<b class="alert">disconnected</b>{{end}} · outbox {{.Outbox}} · up {{.Uptime}}</p>
<p class="label"><a href="/label">{{if .SamplesErr}}Samples unavailable: {{.SamplesErr}}{{else}}{{.Waiting}} samples wait for a label{{end}}</a></p>
{{range .Cams}}<div class="cam">
<h2>{{.Name}} <span class="meta">({{.Status.State}}, {{printf "%.1f" .Status.FPS}} fps{{if .Status.LastError}}, last error: {{.Status.LastError}}{{end}})</span></h2>
{{if .Active}}<p class="label alert">Alert: {{.ActiveDisplay}} since {{.Active.Start.Format "01-02 15:04:05"}}</p>{{end}}
{{if .State.Label}}<p class="label {{.Class}}">Latest: {{.State.Display}} — {{printf "%.0f" .Pct}}%</p>
<p class="meta">frame {{.State.FrameTime.Format "2006-01-02 15:04:05Z"}}</p>
<img src="/snapshot/{{.Name}}" alt="latest annotated snapshot of {{.Name}}">{{else}}<p class="meta">no sample yet</p>{{end}}
<h3>Recent alerts</h3>{{if .Alerts}}<table><tr><th>phase</th><th>label</th><th>confidence</th><th>start</th><th>end</th></tr>
{{range .Alerts}}<tr><td>{{.Phase}}</td><td>{{.Display}}</td><td>{{printf "%.0f" (pct .Confidence)}}%</td><td>{{.Start.Format "01-02 15:04:05"}}</td><td>{{if not .End.IsZero}}{{.End.Format "01-02 15:04:05"}}{{end}}</td></tr>{{end}}
</table>{{else}}<p class="meta">none</p>{{end}}
</div>{{end}}
</body></html>`))

type camView struct {
	Name   string
	Status vision.Status
	State  mqtt.Classification
	Pct    float64
	Class  string
	Alerts []mqtt.Alert
	// Active is the ongoing alert, shown apart from the latest sample.
	Active        *Event
	ActiveDisplay string
}

func (d *Daemon) statusPage(w http.ResponseWriter, r *http.Request) {
	clf := d.engine()
	data := struct {
		Device, Model, Engine string
		Broker                bool
		Outbox                int
		Uptime                string
		Cams                  []camView
		Waiting               int
		SamplesErr            string
	}{Device: d.cfg.Device, Model: clf.Model().Meta.Version, Engine: clf.Engine(), Broker: d.pub.Connected(), Outbox: d.pub.Outbox().Len(),
		Uptime: time.Since(d.start).Round(time.Second).String()}
	if sum, err := d.samplesSummary(); err != nil {
		data.SamplesErr = err.Error()
	} else {
		data.Waiting = sum.Unlabelled
	}
	for _, c := range d.cams {
		c.mu.Lock()
		v := camView{Name: c.cfg.Name, Status: c.src.Status(), State: c.state, Pct: float64(c.state.Confidence) * 100, Active: c.active}
		if c.active != nil {
			v.ActiveDisplay = displayOf(c.active.Label)
		}
		for i := len(c.alerts) - 1; i >= 0; i-- {
			v.Alerts = append(v.Alerts, c.alerts[i])
		}
		c.mu.Unlock()
		switch {
		case IsDisease(v.State.Label):
			v.Class = "alert"
		case v.State.Label == Uncertain:
			v.Class = "unsure"
		default:
			v.Class = "ok"
		}
		data.Cams = append(data.Cams, v)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := statusTmpl.Execute(w, data); err != nil {
		d.log.Error("status page", "err", err)
	}
}
