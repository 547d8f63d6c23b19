package samples

import (
	"context"
	"errors"
	"fmt"
	"image"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gocv.io/x/gocv"

	"github.com/leafwatch/leafwatch/internal/fieldset"
)

// Config is one camera's keep settings (`keep:` in the camera's config).
type Config struct {
	Enabled bool `yaml:"enabled"`
	// Rules are the keep rules that may fire (default all five); e.g.
	// [baseline] keeps random samples only.
	Rules []string `yaml:"rules"`
	// Margin: a region whose top-1 and top-2 probabilities are this close
	// is a close call.
	Margin float32 `yaml:"margin"`
	// Epsilon: a top class this close to the threshold is a close call.
	Epsilon float32 `yaml:"epsilon"`
	// BaselineEvery: one region kept at random per this interval (at a
	// random moment in each), whatever the model said; 0 turns it off.
	BaselineEvery time.Duration `yaml:"baseline_every"`
	// DedupWindow and DedupDistance: a region within DedupDistance bits
	// (of 64) of one kept from the same camera in the last DedupWindow is
	// skipped, unless the model's answer changed.
	DedupWindow   time.Duration `yaml:"dedup_window"`
	DedupDistance int           `yaml:"dedup_distance"`
	// MaxPerHour caps what the rules keep per camera (baseline and alert
	// samples are not counted: they are rare by design).
	MaxPerHour int `yaml:"max_per_hour"`
	// MaxPerFrame: at most this many regions of one frame, lowest margin
	// first.
	MaxPerFrame int `yaml:"max_per_frame"`
}

// DefaultConfig: on, close calls within 0.15 (or 0.05 of the threshold),
// one baseline sample an hour, near-duplicates skipped for a day, at most
// 60 samples an hour and 3 per frame.
func DefaultConfig() Config {
	return Config{Enabled: true, Rules: slices.Clone(fieldset.Rules), Margin: 0.15, Epsilon: 0.05, BaselineEvery: time.Hour, DedupWindow: 24 * time.Hour,
		DedupDistance: 6, MaxPerHour: 60, MaxPerFrame: 3}
}

// Validate checks one camera's settings.
func (c Config) Validate() error {
	var errs []error
	for _, r := range c.Rules {
		if !slices.Contains(fieldset.Rules, r) {
			errs = append(errs, fmt.Errorf("rules: %q is not a rule (%s)", r, strings.Join(fieldset.Rules, ", ")))
		}
	}
	if c.Margin < 0 || c.Margin >= 1 {
		errs = append(errs, fmt.Errorf("margin %v: use 0..1", c.Margin))
	}
	if c.Epsilon < 0 || c.Epsilon >= 1 {
		errs = append(errs, fmt.Errorf("epsilon %v: use 0..1", c.Epsilon))
	}
	if c.BaselineEvery != 0 && c.BaselineEvery < time.Second {
		errs = append(errs, fmt.Errorf("baseline_every %v: use 0 (off) or at least 1s", c.BaselineEvery))
	}
	if c.DedupWindow < 0 || c.DedupWindow > 30*24*time.Hour {
		errs = append(errs, fmt.Errorf("dedup_window %v: use 0..720h", c.DedupWindow))
	}
	if c.DedupDistance < 0 || c.DedupDistance > 32 {
		errs = append(errs, fmt.Errorf("dedup_distance %d: use 0..32 bits", c.DedupDistance))
	}
	if c.MaxPerHour < 1 || c.MaxPerHour > 3600 {
		errs = append(errs, fmt.Errorf("max_per_hour %d: use 1..3600", c.MaxPerHour))
	}
	if c.MaxPerFrame < 1 || c.MaxPerFrame > 64 {
		errs = append(errs, fmt.Errorf("max_per_frame %d: use 1..64", c.MaxPerFrame))
	}
	return errors.Join(errs...)
}

// Region is one classified region of a frame, as the daemon saw it.
type Region struct {
	Box       image.Rectangle
	Kind      string            // frame, tile or leaf
	Top       []fieldset.Scored // best first (up to 5 are recorded)
	Decided   string            // the label after the threshold; Uncertain below it
	Threshold float32           // the threshold that applied to the top class
	Disease   bool              // Decided is a disease
}

// Uncertain is the decided label of a region below its threshold.
const Uncertain = "uncertain"

// Offer is one sampled frame and what the model said about its regions.
type Offer struct {
	Camera  string
	Time    time.Time
	Frame   *gocv.Mat // the camera's frame; Offer may swap in another Mat
	Regions []Region
	// Alert: this frame started or ended an alert; Chosen is the region
	// that answered for the camera.
	Alert      bool
	Chosen     int
	Model      fieldset.ModelRef
	Preprocess fieldset.Preprocess
}

// Metrics receives what the keeper did, for the daemon's metrics.
type Metrics interface {
	Kept(camera, rule string)
	Skipped(camera, reason string)
	Evicted(n int)
	WriteFailed()
	BudgetFull(full bool)
}

// Skip reasons.
const (
	SkipDuplicate = "duplicate"
	SkipHourlyCap = "hourly_cap"
	SkipBusy      = "busy" // the writer is behind: the frame was not taken
	SkipBudget    = "budget_full"
	SkipPerFrame  = "per_frame_cap"
)

// Options are a Keeper's settings beyond the cameras'.
type Options struct {
	MaxBytes   int64 // disk cap of the store
	FrameWidth int   // the frame copy's width (default 640)
	Quality    int   // JPEG quality of regions (default 85: the model sees them shrunk 2–4×)
	Log        *slog.Logger
	Metrics    Metrics
	Seed       uint64 // baseline draws; 0 = random
	// Clock is the monotonic time the caps, windows and baseline moments
	// follow (default: time since NewKeeper). Simulations of a day use
	// their own.
	Clock func() time.Duration
}

// Keeper decides which regions to keep and writes them, off the sample
// path: Offer evaluates the rules on the camera's goroutine (a few
// comparisons) and, when one fires, takes the frame by swapping the
// camera's Mat for a spare one — no copy, no encoding, no disk. A writer
// goroutine hashes, deduplicates, encodes and stores. A camera has two
// spare Mats: when both are in the writer's hands, a frame is skipped
// ("busy") rather than waited for.
type Keeper struct {
	store *Store
	opt   Options
	log   *slog.Logger
	met   Metrics
	cams  map[string]*camState
	jobs  chan *job
	start time.Time // origin of the monotonic clocks below

	full     atomic.Bool
	busy     atomic.Int32 // samples running now (Busy): the writer yields to them
	failLog  atomic.Int64 // monotonic ns of the last write-failure log line
	done     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

type camState struct {
	cfg  Config
	pool chan gocv.Mat // spare Mats, swapped for frames the writer takes
	rng  *rand.Rand

	// baseline: one random moment per window of BaselineEvery.
	window, moment time.Duration // on the keeper's monotonic clock
	fired          bool

	mu     sync.Mutex
	recent []kept          // kept regions in the dedup window, oldest first
	hour   []time.Duration // when rule-kept samples were kept (hourly cap)
}

type kept struct {
	at    time.Duration // monotonic
	hash  uint64
	label string // the model's top class then
}

type job struct {
	cam   *camState
	o     Offer
	frame gocv.Mat
	rules [][]string // per region; nil when not a candidate
	order []int      // candidate regions, most wanted first
}

// NewKeeper prepares keeping for the cameras (name → settings); Start
// recovers the store and starts the writer.
func NewKeeper(store *Store, cams map[string]Config, opt Options) *Keeper {
	if opt.FrameWidth <= 0 {
		opt.FrameWidth = 640
	}
	if opt.Quality <= 0 {
		opt.Quality = 85
	}
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	seed := opt.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	k := &Keeper{store: store, opt: opt, log: opt.Log, met: opt.Metrics, cams: map[string]*camState{},
		jobs: make(chan *job, 2*len(cams)+1), start: time.Now(), done: make(chan struct{})}
	i := uint64(0)
	for name, c := range cams {
		i++
		cs := &camState{cfg: c, pool: make(chan gocv.Mat, 2), rng: rand.New(rand.NewPCG(seed, i))}
		for range 2 {
			cs.pool <- gocv.NewMat()
		}
		if c.BaselineEvery > 0 {
			cs.moment = time.Duration(cs.rng.Int64N(int64(c.BaselineEvery)))
		}
		k.cams[name] = cs
	}
	return k
}

func (k *Keeper) mono() time.Duration {
	if k.opt.Clock != nil {
		return k.opt.Clock()
	}
	return time.Since(k.start)
}

// Start cleans up after a crash (records without files, files without
// records), loads the recent hashes for deduplication, applies the budget
// and starts the writer.
func (k *Keeper) Start(ctx context.Context) error {
	rep, err := k.store.Recover(ctx)
	if err != nil {
		return fmt.Errorf("samples: recovering the store: %w", err)
	}
	if rep.RecordsWithoutFiles+rep.OrphanFiles+rep.TempFiles > 0 {
		k.log.Warn("samples: the store was cleaned up after an interruption", "records_without_files", rep.RecordsWithoutFiles,
			"files_without_records", rep.OrphanFiles, "half_written_files", rep.TempFiles)
	}
	if len(rep.LabelledLost) > 0 {
		k.log.Error("samples: LABELLED SAMPLES LOST: their image files are gone from the disk (removed by hand, or the disk failed); their records were removed",
			"count", len(rep.LabelledLost), "ids", rep.LabelledLost)
	}
	if err := k.loadRecent(ctx); err != nil {
		return err
	}
	k.enforce(ctx)
	k.wg.Add(1)
	go k.writer()
	return nil
}

// loadRecent fills each camera's dedup memory from the store.
func (k *Keeper) loadRecent(ctx context.Context) error {
	now := time.Now()
	for name, cs := range k.cams {
		if cs.cfg.DedupWindow <= 0 {
			continue
		}
		rows, err := k.store.db.QueryContext(ctx, `SELECT taken_at, dhash, pred FROM samples WHERE camera = ? AND taken_at >= ? ORDER BY taken_at`,
			name, fmtTime(now.Add(-cs.cfg.DedupWindow)))
		if err != nil {
			return err
		}
		for rows.Next() {
			var at string
			var h int64
			var l string
			rows.Scan(&at, &h, &l)
			// On the monotonic clock: as long ago as the wall clocks say.
			cs.recent = append(cs.recent, kept{at: k.mono() - now.Sub(parseTime(at)), hash: uint64(h), label: l})
		}
		rows.Close()
	}
	return nil
}

// Offer evaluates the keep rules for a sampled frame. When any fires it
// takes the frame (swapping *o.Frame for a spare Mat) and queues it for
// the writer; it never blocks and never copies pixels.
func (k *Keeper) Offer(o Offer) {
	cs := k.cams[o.Camera]
	if cs == nil || !cs.cfg.Enabled || len(o.Regions) == 0 || o.Frame == nil {
		return
	}
	j := &job{cam: cs, o: o, rules: k.rules(cs, &o)}
	for i, r := range j.rules {
		if len(r) > 0 {
			j.order = append(j.order, i)
		}
	}
	if len(j.order) == 0 {
		return
	}
	// Exempt (baseline, alert) first, then lowest margin.
	slices.SortStableFunc(j.order, func(a, b int) int {
		ea, eb := exempt(j.rules[a]), exempt(j.rules[b])
		switch {
		case ea && !eb:
			return -1
		case eb && !ea:
			return 1
		}
		ma, mb := margin(o.Regions[a].Top), margin(o.Regions[b].Top)
		switch {
		case ma < mb:
			return -1
		case ma > mb:
			return 1
		}
		return 0
	})
	if k.full.Load() { // the writer looks again every minute
		k.skip(o.Camera, SkipBudget, len(j.order))
		return
	}
	// Over the hourly cap only exempt regions are worth taking the frame for.
	if k.overCap(cs) {
		var keep []int
		for _, i := range j.order {
			if exempt(j.rules[i]) {
				keep = append(keep, i)
			} else {
				k.skip(o.Camera, SkipHourlyCap, 1)
			}
		}
		if j.order = keep; len(j.order) == 0 {
			return
		}
	}
	var spare gocv.Mat
	select {
	case spare = <-cs.pool:
	default:
		k.skip(o.Camera, SkipBusy, len(j.order))
		return
	}
	j.frame, *o.Frame = *o.Frame, spare
	j.o.Frame = nil
	// The camera reuses its regions slice for its next sample while the
	// writer still reads this one: the job keeps a copy (a region's Top is
	// the camera's fresh slice each sample, and is not written after).
	j.o.Regions = slices.Clone(o.Regions)
	select {
	case k.jobs <- j:
	default: // cannot happen while pools bound the jobs; never block the camera
		k.skip(o.Camera, SkipBusy, len(j.order))
		cs.pool <- j.frame
	}
}

// rules returns the rules that fire for each region.
func (k *Keeper) rules(cs *camState, o *Offer) [][]string {
	out := make([][]string, len(o.Regions))
	healthy, diseases := false, map[string]bool{}
	for _, r := range o.Regions {
		switch {
		case r.Decided == Uncertain || r.Decided == fieldset.NotALeaf:
		case r.Disease:
			diseases[r.Decided] = true
		default:
			healthy = true
		}
	}
	disagree := len(diseases) > 1 || (len(diseases) == 1 && healthy)
	on := func(rule string) bool { return slices.Contains(cs.cfg.Rules, rule) }
	for i, r := range o.Regions {
		if len(r.Top) == 0 {
			continue
		}
		top := r.Top[0].Prob
		if r.Decided == Uncertain && on(fieldset.RuleUncertain) {
			out[i] = append(out[i], fieldset.RuleUncertain)
		}
		if (margin(r.Top) <= cs.cfg.Margin || abs32(top-r.Threshold) <= cs.cfg.Epsilon) && on(fieldset.RuleCloseCall) {
			out[i] = append(out[i], fieldset.RuleCloseCall)
		}
		if disagree && r.Decided != Uncertain && r.Decided != fieldset.NotALeaf && on(fieldset.RuleDisagree) {
			out[i] = append(out[i], fieldset.RuleDisagree)
		}
		if o.Alert && i == o.Chosen && on(fieldset.RuleAlert) {
			out[i] = append(out[i], fieldset.RuleAlert)
		}
	}
	if on(fieldset.RuleBaseline) {
		if i, ok := k.baselineDue(cs, len(o.Regions)); ok {
			out[i] = append(out[i], fieldset.RuleBaseline)
		}
	}
	return out
}

// baselineDue reports whether this frame is the baseline sample of the
// current window (the first frame at or after the window's random moment)
// and which region to take, at random.
func (k *Keeper) baselineDue(cs *camState, regions int) (int, bool) {
	every := cs.cfg.BaselineEvery
	if every <= 0 {
		return 0, false
	}
	now := k.mono()
	// A long gap (camera down) moves to the window now holds.
	for now >= cs.window+every {
		cs.window += every
		cs.moment = cs.window + time.Duration(cs.rng.Int64N(int64(every)))
		cs.fired = false
	}
	if cs.fired || now < cs.moment {
		return 0, false
	}
	cs.fired = true
	return cs.rng.IntN(regions), true
}

func exempt(rules []string) bool {
	return slices.Contains(rules, fieldset.RuleBaseline) || slices.Contains(rules, fieldset.RuleAlert)
}

func margin(top []fieldset.Scored) float32 {
	switch len(top) {
	case 0:
		return 1
	case 1:
		return top[0].Prob
	}
	return top[0].Prob - top[1].Prob
}

func abs32(x float32) float32 {
	if x < 0 {
		return -x
	}
	return x
}

// overCap reports whether the camera kept MaxPerHour rule samples in the
// last hour.
func (k *Keeper) overCap(cs *camState) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.trimHour(k.mono())
	return len(cs.hour) >= cs.cfg.MaxPerHour
}

func (cs *camState) trimHour(now time.Duration) {
	i := 0
	for i < len(cs.hour) && now-cs.hour[i] >= time.Hour {
		i++
	}
	cs.hour = cs.hour[i:]
}

func (k *Keeper) skip(camera, reason string, n int) {
	if k.met != nil {
		for range n {
			k.met.Skipped(camera, reason)
		}
	}
}

// Close stops the writer after the frames it holds (at most 3 s), and
// frees the spare Mats.
func (k *Keeper) Close() {
	k.stopOnce.Do(func() {
		close(k.done)
		k.wg.Wait()
		for {
			select {
			case j := <-k.jobs:
				j.frame.Close()
				continue
			default:
			}
			break
		}
		for _, cs := range k.cams {
			for {
				select {
				case m := <-cs.pool:
					m.Close()
					continue
				default:
				}
				break
			}
		}
	})
}

// Busy marks a sample running (+1) and ending (-1). The writer does its
// work — JPEG encoding, hashing, the disk — between samples: on a board
// whose cores the engine fills, the writer competing with a sample slowed
// it by 3–5% (BenchmarkKeepOverhead); between samples it costs nothing.
// It waits at most maxYield for a gap, so keeping goes on (slower) when
// the cameras keep the engine busy all the time.
func (k *Keeper) Busy(delta int) { k.busy.Add(int32(delta)) }

// maxYield bounds how long the writer waits for a gap between samples.
const maxYield = 2 * time.Second

// yield waits until no sample runs, or maxYield.
func (k *Keeper) yield() {
	deadline := time.Now().Add(maxYield)
	for k.busy.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
}

// Pending reports whether the writer holds frames not yet written.
func (k *Keeper) Pending() bool {
	for _, cs := range k.cams {
		if len(cs.pool) < cap(cs.pool) {
			return true
		}
	}
	return false
}

// Full reports whether labelled samples fill the budget (keeping stopped).
func (k *Keeper) Full() bool { return k.full.Load() }

// Store is the keeper's store.
func (k *Keeper) Store() *Store { return k.store }
