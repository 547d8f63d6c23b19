package daemon

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/leafwatch/leafwatch/daemon/samples"
	"github.com/leafwatch/leafwatch/internal/fieldset"
	"github.com/leafwatch/leafwatch/model"
)

// The labelling page (/label): every asset is embedded (a board in a
// greenhouse has no internet), served under a strict Content-Security-
// Policy; state-changing requests are POSTs that must carry the page's
// token and come from the same origin.

//go:embed web/label.html web/label.js web/label.css
var webFS embed.FS

var labelTmpl = template.Must(template.ParseFS(webFS, "web/label.html"))

const csrfHeader = "X-Leafwatch-Token"

func (d *Daemon) labelRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /label", d.labelPage)
	mux.HandleFunc("GET /label/app.js", staticFile("web/label.js", "text/javascript; charset=utf-8"))
	mux.HandleFunc("GET /label/app.css", staticFile("web/label.css", "text/css; charset=utf-8"))
	mux.HandleFunc("GET /label/api/summary", d.labelSummary)
	mux.HandleFunc("GET /label/api/queue", d.labelQueue)
	mux.HandleFunc("GET /label/img/{id}/{kind}", d.labelImage)
	mux.HandleFunc("POST /label/api/label", d.guard(d.labelApply))
	mux.HandleFunc("POST /label/api/undo", d.guard(d.labelUndo))
	mux.HandleFunc("GET /samples/export", d.samplesExport)
}

func staticFile(name, ctype string) http.HandlerFunc {
	b, err := webFS.ReadFile(name)
	if err != nil {
		panic(err) // embedded at build time
	}
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", ctype)
		w.Header().Set("Cache-Control", "no-cache")
		w.Write(b)
	}
}

// newCSRFToken is the token the page carries and POSTs return; one per
// daemon run (a reload of the page after a restart takes the new one).
func newCSRFToken() string {
	b := make([]byte, 24)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// guard refuses state-changing requests that did not come from the page:
// without the page's token (a cross-site form or script cannot read it,
// nor set the header without a CORS preflight this server never grants),
// or that the browser marks as cross-site.
func (d *Daemon) guard(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
			httpError(w, http.StatusForbidden, "cross-site request refused")
			return
		}
		if o := r.Header.Get("Origin"); o != "" && !sameOrigin(o, r) {
			httpError(w, http.StatusForbidden, "cross-origin request refused")
			return
		}
		tok := r.Header.Get(csrfHeader)
		if subtle.ConstantTimeCompare([]byte(tok), []byte(d.csrf)) != 1 {
			httpError(w, http.StatusForbidden, "missing or stale page token: reload the labelling page")
			return
		}
		next(w, r)
	}
}

// sameOrigin compares an Origin header with the host the request was sent to.
func sameOrigin(origin string, r *http.Request) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v)
}

// who names the person behind a request: the basic-auth user, "token"
// for a bearer token, else "local".
func (d *Daemon) who(r *http.Request) string {
	if u, _, ok := r.BasicAuth(); ok && d.auth != nil {
		return u
	}
	if d.auth != nil && strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
		return "token"
	}
	return "local"
}

func (d *Daemon) labelPage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'; form-action 'self'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	data := struct{ Device, Token, Error string }{d.cfg.Device, d.csrf, ""}
	if d.store == nil {
		data.Error = "The samples store is not available: " + d.samplesErr
	}
	if err := labelTmpl.Execute(w, data); err != nil {
		d.log.Error("label page", "err", err)
	}
}

// allowedLabels are the labels a person may give: the serving model's,
// "not a leaf" and "unsure".
func (d *Daemon) allowedLabels() []string {
	out := slices.Clone(d.engine().Model().Meta.Labels)
	for _, l := range []string{fieldset.NotALeaf, fieldset.Unsure} {
		if !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	return out
}

type labelChoice struct {
	Label   string `json:"label"`
	Display string `json:"display"`
}

func (d *Daemon) labelSummary(w http.ResponseWriter, r *http.Request) {
	if d.store == nil {
		httpError(w, http.StatusServiceUnavailable, "samples store unavailable: "+d.samplesErr)
		return
	}
	sum, err := d.samplesSummary()
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	var choices []labelChoice
	for _, l := range d.allowedLabels() {
		choices = append(choices, labelChoice{l, labelDisplay(l)})
	}
	var cams []string
	for _, c := range d.cfg.Cameras {
		cams = append(cams, c.Name)
	}
	writeJSON(w, map[string]any{"summary": sum, "target": d.cfg.Samples.TargetPerClass, "labels": choices, "cameras": cams,
		"rules": fieldset.Rules, "budget_full": d.keeper != nil && d.keeper.Full(), "model_version": d.engine().Model().Meta.Version})
}

// labelDisplay is a label as people read it.
func labelDisplay(l string) string {
	switch l {
	case fieldset.NotALeaf:
		return "Not a leaf"
	case fieldset.Unsure:
		return "Unsure"
	}
	return model.DisplayLabel(l)
}

type queueItem struct {
	ID        string            `json:"id"`
	Camera    string            `json:"camera"`
	Time      time.Time         `json:"time"`
	Region    string            `json:"region"`
	Box       [4]int            `json:"box"`
	FrameSize [2]int            `json:"frame_size"`
	Top       []fieldset.Scored `json:"top"`
	Displays  []string          `json:"displays"`
	Rules     []string          `json:"rules"`
	Margin    float32           `json:"margin"`
}

func (d *Daemon) labelQueue(w http.ResponseWriter, r *http.Request) {
	if d.store == nil {
		httpError(w, http.StatusServiceUnavailable, "samples store unavailable: "+d.samplesErr)
		return
	}
	q := r.URL.Query()
	limit, _ := strconv.Atoi(q.Get("limit"))
	if limit <= 0 || limit > 500 {
		limit = 60
	}
	offset, _ := strconv.Atoi(q.Get("offset"))
	f := samples.Filter{Camera: q.Get("camera"), Rule: q.Get("rule"), Predicted: q.Get("pred"), Unlabelled: true, Queue: true, Limit: limit, Offset: offset}
	list, err := d.store.List(r.Context(), f)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	total, err := d.store.Count(r.Context(), samples.Filter{Camera: f.Camera, Rule: f.Rule, Predicted: f.Predicted, Unlabelled: true})
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	items := []queueItem{}
	for _, s := range list {
		it := queueItem{ID: s.ID, Camera: s.Camera, Time: s.Time, Region: s.Region, Box: s.Box, FrameSize: s.FrameSize, Top: s.Top, Rules: s.Rules, Margin: s.Margin}
		for _, t := range s.Top {
			it.Displays = append(it.Displays, labelDisplay(t.Label))
		}
		items = append(items, it)
	}
	writeJSON(w, map[string]any{"samples": items, "total": total})
}

func (d *Daemon) labelImage(w http.ResponseWriter, r *http.Request) {
	if d.store == nil {
		http.NotFound(w, r)
		return
	}
	s, err := d.store.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	rel := s.File
	if r.PathValue("kind") == "frame" {
		rel = s.FrameFile
	} else if r.PathValue("kind") != "region" {
		http.NotFound(w, r)
		return
	}
	b, err := d.store.ReadImage(rel)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "image/jpeg")
	w.Header().Set("Cache-Control", "private, max-age=86400, immutable") // a sample's images never change
	w.Write(b)
}

// maxLabelRequest bounds a labelling request's body.
const maxLabelRequest = 1 << 20

func (d *Daemon) labelApply(w http.ResponseWriter, r *http.Request) {
	if d.store == nil {
		httpError(w, http.StatusServiceUnavailable, "samples store unavailable: "+d.samplesErr)
		return
	}
	var req struct {
		IDs   []string `json:"ids"`
		Label string   `json:"label"`
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, maxLabelRequest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		httpError(w, http.StatusBadRequest, "want {\"ids\": [...], \"label\": \"...\"}: "+err.Error())
		return
	}
	if len(req.IDs) == 0 || len(req.IDs) > 1000 {
		httpError(w, http.StatusBadRequest, "give 1 to 1000 sample ids")
		return
	}
	if !slices.Contains(d.allowedLabels(), req.Label) {
		httpError(w, http.StatusBadRequest, fmt.Sprintf("%q is not one of the model's labels, not_a_leaf or unsure", req.Label))
		return
	}
	res, err := d.store.Label(r.Context(), req.IDs, req.Label, d.who(r), time.Now())
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	d.forgetSummary()
	writeJSON(w, res)
}

func (d *Daemon) labelUndo(w http.ResponseWriter, r *http.Request) {
	if d.store == nil {
		httpError(w, http.StatusServiceUnavailable, "samples store unavailable: "+d.samplesErr)
		return
	}
	u, err := d.store.Undo(r.Context(), d.who(r))
	if errors.Is(err, samples.ErrNothingToUndo) {
		httpError(w, http.StatusConflict, "nothing to undo")
		return
	}
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	d.forgetSummary()
	writeJSON(w, u)
}

// samplesExport streams the export as a tar archive: the same files
// `leafwatchd samples export` writes, under leafwatch-export/. The same
// content has the same bytes and ETag, so an interrupted download resumes
// with Range and If-Range (finetune pull does). It needs http_auth unless
// asked from this machine.
func (d *Daemon) samplesExport(w http.ResponseWriter, r *http.Request) {
	if d.store == nil {
		httpError(w, http.StatusServiceUnavailable, "samples store unavailable: "+d.samplesErr)
		return
	}
	if d.auth == nil && !fromLoopback(r) {
		httpError(w, http.StatusForbidden, "the samples export needs http_auth (token_file or basic_auth_file) when asked from another machine")
		return
	}
	q := r.URL.Query()
	opt := samples.ExportOptions{LabelledOnly: q.Get("labelled_only") == "1" || q.Get("labelled_only") == "true", Camera: q.Get("camera"),
		Labels: d.allowedLabels(), Name: "leafwatch-export"}
	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	plan, err := d.store.PlanTar(ctx, opt)
	cancel()
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	etag := `"` + plan.Tag + `"`
	h := w.Header()
	h.Set("ETag", etag)
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Type", "application/x-tar")
	h.Set("Content-Disposition", `attachment; filename="leafwatch-export-`+d.cfg.Device+`.tar"`)
	h.Set("X-Leafwatch-Labelled", strconv.Itoa(plan.Report.Labelled))
	h.Set("X-Leafwatch-Records", strconv.Itoa(plan.Report.Records))
	skip := int64(0)
	if rng := r.Header.Get("Range"); rng != "" && (r.Header.Get("If-Range") == "" || r.Header.Get("If-Range") == etag) {
		from, ok := parseRangeFrom(rng)
		if !ok || from >= plan.Size {
			h.Set("Content-Range", fmt.Sprintf("bytes */%d", plan.Size))
			httpError(w, http.StatusRequestedRangeNotSatisfiable, "only one range from a byte to the end (bytes=N-) inside the archive")
			return
		}
		skip = from
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, plan.Size-1, plan.Size))
		h.Set("Content-Length", strconv.FormatInt(plan.Size-from, 10))
		w.WriteHeader(http.StatusPartialContent)
	} else {
		h.Set("Content-Length", strconv.FormatInt(plan.Size, 10))
	}
	if r.Method == http.MethodHead {
		return
	}
	if err := d.store.WriteTar(w, plan, skip); err != nil {
		// The status is sent: the client sees a short body (Content-Length)
		// and retries.
		d.log.Warn("samples export interrupted", "err", err)
	}
}

// parseRangeFrom reads "bytes=N-".
func parseRangeFrom(h string) (int64, bool) {
	v, ok := strings.CutPrefix(h, "bytes=")
	if !ok || !strings.HasSuffix(v, "-") || strings.Contains(v, ",") {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSuffix(v, "-"), 10, 64)
	return n, err == nil && n >= 0
}

func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	ip := net.ParseIP(host)
	return err == nil && ip != nil && ip.IsLoopback()
}
