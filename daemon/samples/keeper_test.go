package samples

import (
	"context"
	"image"
	"slices"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"github.com/leafwatch/leafwatch/internal/fieldset"
)

var quad = []image.Rectangle{image.Rect(0, 0, 320, 240), image.Rect(320, 0, 640, 240), image.Rect(0, 240, 320, 480), image.Rect(320, 240, 640, 480)}

// TestRules: which rules fire for which regions.
func TestRules(t *testing.T) {
	sure := func(l string) []fieldset.Scored { return scored(l, 0.95, "Tomato___Leaf_Mold", 0.03) }
	cases := []struct {
		name   string
		tops   [][]fieldset.Scored
		alert  bool
		chosen int
		want   [][]string
	}{
		{"all sure and agreeing: nothing", [][]fieldset.Scored{sure("Tomato___healthy"), sure("Tomato___healthy")}, false, 0, [][]string{nil, nil}},
		{"below threshold: uncertain", [][]fieldset.Scored{scored("Tomato___healthy", 0.5, "Tomato___Leaf_Mold", 0.1), sure("Tomato___healthy")}, false, 0,
			[][]string{{"uncertain"}, nil}},
		{"top two close: close call", [][]fieldset.Scored{scored("Tomato___healthy", 0.8, "Tomato___Leaf_Mold", 0.7)}, false, 0, [][]string{{"close_call"}}},
		{"near the threshold: close call", [][]fieldset.Scored{scored("Tomato___healthy", 0.72, "Tomato___Leaf_Mold", 0.1)}, false, 0, [][]string{{"close_call"}}},
		{"healthy vs disease: disagree", [][]fieldset.Scored{sure("Tomato___healthy"), sure("Tomato___Late_blight")}, false, 0,
			[][]string{{"disagree"}, {"disagree"}}},
		{"two diseases: disagree", [][]fieldset.Scored{sure("Tomato___Early_blight"), sure("Tomato___Late_blight"), scored("Tomato___healthy", 0.4, "x", 0.1)}, false, 0,
			[][]string{{"disagree"}, {"disagree"}, {"uncertain"}}},
		{"one disease, the rest unsure: no disagreement", [][]fieldset.Scored{sure("Tomato___Late_blight"), scored("Tomato___healthy", 0.45, "x", 0.1)}, false, 0,
			[][]string{nil, {"uncertain"}}},
		{"alert frame: the answering region", [][]fieldset.Scored{sure("Tomato___Late_blight"), sure("Tomato___Late_blight")}, true, 1, [][]string{nil, {"alert"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.BaselineEvery = 0
			k := NewKeeper(openStore(t), map[string]Config{"cam": cfg}, Options{})
			defer k.Close()
			o := Offer{Camera: "cam", Alert: c.alert, Chosen: c.chosen}
			for i, top := range c.tops {
				o.Regions = append(o.Regions, region(quad[i], top))
			}
			got := k.rules(k.cams["cam"], &o)
			for i := range c.want {
				if !slices.Equal(got[i], c.want[i]) {
					t.Errorf("region %d: rules %v, want %v", i, got[i], c.want[i])
				}
			}
		})
	}
}

// TestBaselineOncePerWindow: one random region per window, whatever the
// model said, at a random moment inside it.
func TestBaselineOncePerWindow(t *testing.T) {
	cfg := DefaultConfig()
	cfg.BaselineEvery = 40 * time.Millisecond
	k := NewKeeper(openStore(t), map[string]Config{"cam": cfg}, Options{Seed: 3})
	defer k.Close()
	cs := k.cams["cam"]
	fired := 0
	start := time.Now()
	for time.Since(start) < 400*time.Millisecond {
		if _, ok := k.baselineDue(cs, 4); ok {
			fired++
		}
		time.Sleep(2 * time.Millisecond)
	}
	// 10 windows in 400 ms; the first and last may be cut.
	if fired < 8 || fired > 11 {
		t.Errorf("%d baseline samples in 400 ms of 40 ms windows", fired)
	}
}

// offerOne hands the keeper one frame (and closes what it got back).
func offerOne(k *Keeper, camera string, m *gocv.Mat, at time.Time, regions ...Region) {
	k.Offer(Offer{Camera: camera, Time: at, Frame: m, Regions: regions, Model: fieldset.ModelRef{Version: "v1", Engine: "cpu"},
		Preprocess: fieldset.Preprocess{InputSize: 224, Regions: "tiles"}})
}

// TestKeeperKeepsDedupsAndCaps: the writer keeps rule regions at full
// resolution with a frame copy; the same view with the same answer is
// skipped, with another answer kept; the hourly and per-frame caps hold.
func TestKeeperKeepsDedupsAndCaps(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	cfg := DefaultConfig()
	cfg.BaselineEvery, cfg.MaxPerHour, cfg.MaxPerFrame = 0, 5, 2
	met := newCounting()
	k := NewKeeper(st, map[string]Config{"cam": cfg}, Options{Metrics: met, FrameWidth: 200})
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	unsure := scored("Tomato___healthy", 0.4, "Tomato___Late_blight", 0.35)
	at := t0
	next := func(seed uint64, regions ...Region) {
		m := frame(t, 640, 480, seed)
		offerOne(k, "cam", &m, at, regions...)
		m.Close()
		at = at.Add(time.Second)
		waitFor(t, "the writer", func() bool { return len(k.cams["cam"].pool) == 2 })
	}
	next(1, region(quad[0], unsure))
	s, err := st.List(ctx, Filter{})
	if err != nil || len(s) != 1 {
		t.Fatalf("%d kept (%v), want 1", len(s), err)
	}
	if s[0].Box != [4]int{0, 0, 320, 240} || s[0].FrameSize != [2]int{640, 480} || !slices.Equal(s[0].Rules, []string{"uncertain", "close_call"}) {
		t.Errorf("record %+v", s[0].Record)
	}
	img, _ := st.ReadImage(s[0].File)
	m, _ := gocv.IMDecode(img, gocv.IMReadColor)
	if m.Cols() != 320 || m.Rows() != 240 {
		t.Errorf("the region JPEG is %dx%d, want the full-resolution 320x240", m.Cols(), m.Rows())
	}
	m.Close()
	fimg, _ := st.ReadImage(s[0].FrameFile)
	fm, _ := gocv.IMDecode(fimg, gocv.IMReadColor)
	if fm.Cols() != 200 || fm.Rows() != 150 {
		t.Errorf("the frame copy is %dx%d, want 200x150", fm.Cols(), fm.Rows())
	}
	fm.Close()
	// The same view, the same answer: a duplicate. Another answer: kept.
	next(1, region(quad[0], unsure))
	if met.get(func(m *countingMetrics) int { return m.skipped[SkipDuplicate] }) != 1 {
		t.Errorf("the same view was not skipped as a duplicate: %+v", met.skipped)
	}
	next(1, region(quad[0], scored("Tomato___Late_blight", 0.4, "Tomato___healthy", 0.35)))
	if n, _ := st.Count(ctx, Filter{}); n != 2 {
		t.Errorf("%d kept after the answer changed, want 2", n)
	}
	// Four uncertain regions of a new frame: two kept (per frame cap).
	next(2, region(quad[0], unsure), region(quad[1], unsure), region(quad[2], unsure), region(quad[3], unsure))
	if n, _ := st.Count(ctx, Filter{}); n != 4 {
		t.Errorf("%d kept, want 4 (2 of the 4 regions)", n)
	}
	// Hourly cap 5: one more frame gets one, then nothing.
	next(3, region(quad[0], unsure), region(quad[1], unsure))
	next(4, region(quad[0], unsure))
	if n, _ := st.Count(ctx, Filter{}); n != 5 {
		t.Errorf("%d kept, want 5 (the hourly cap)", n)
	}
	if met.get(func(m *countingMetrics) int { return m.skipped[SkipHourlyCap] }) == 0 {
		t.Error("no hourly-cap skip counted")
	}
	// An alert frame is kept beyond the cap.
	m2 := frame(t, 640, 480, 5)
	k.Offer(Offer{Camera: "cam", Time: at, Frame: &m2, Alert: true, Chosen: 0, Regions: []Region{region(quad[0], scored("Tomato___Late_blight", 0.9, "x", 0.05))}})
	m2.Close()
	waitFor(t, "the alert sample", func() bool { n, _ := st.Count(ctx, Filter{Rule: fieldset.RuleAlert}); return n == 1 })
	if met.get(func(m *countingMetrics) int { return m.kept[fieldset.RuleAlert] }) != 1 {
		t.Error("the alert sample was not counted")
	}
}

// TestOfferNeverWaits: with the writer stuck on a store that cannot be
// written, Offer returns at once; frames beyond the two spare Mats are
// skipped as busy, and the camera's Mat is always a usable one.
func TestOfferNeverWaits(t *testing.T) {
	st := openStore(t)
	cfg := DefaultConfig()
	cfg.BaselineEvery = 0
	met := newCounting()
	k := NewKeeper(st, map[string]Config{"cam": cfg}, Options{Metrics: met})
	if err := k.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	st.mu.Lock() // the writer blocks in Add
	cam := frame(t, 640, 480, 1)
	done := make(chan struct{})
	go func() {
		for i := 0; i < 6; i++ {
			fresh := frame(t, 640, 480, uint64(10+i))
			fresh.CopyTo(&cam) // as the camera's next grab does
			fresh.Close()
			offerOne(k, "cam", &cam, t0.Add(time.Duration(i)*time.Second), region(quad[0], scored("Tomato___healthy", 0.3, "x", 0.2)))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Offer waited for the writer")
	}
	if got := met.get(func(m *countingMetrics) int { return m.skipped[SkipBusy] }); got < 3 {
		t.Errorf("%d frames skipped as busy, want at least 3 of 6 (2 spare Mats, one being written)", got)
	}
	st.mu.Unlock()
	k.Close()
	cam.Close()
}

// TestFullBudgetStopsKeeping: once labelled samples fill the cap, keeping
// stops (counted), nothing labelled is removed, labelling still works.
func TestFullBudgetStopsKeeping(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	ids := addSamples(t, st, "cam", 4, t0, "Tomato___healthy")
	st.Label(ctx, ids, "Tomato___healthy", "ana", t0)
	used, _ := st.bytesUsed(ctx, st.db)
	cfg := DefaultConfig()
	cfg.BaselineEvery = 0
	met := newCounting()
	k := NewKeeper(st, map[string]Config{"cam": cfg}, Options{Metrics: met, MaxBytes: used - 1})
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if !k.Full() {
		t.Fatal("not full with labelled samples over the cap")
	}
	m := frame(t, 640, 480, 9)
	offerOne(k, "cam", &m, t0, region(quad[0], scored("Tomato___healthy", 0.3, "x", 0.2)))
	m.Close()
	if met.get(func(m *countingMetrics) int { return m.skipped[SkipBudget] }) != 1 {
		t.Errorf("skips %+v", met.skipped)
	}
	if n, _ := st.Count(ctx, Filter{}); n != 4 {
		t.Errorf("%d samples, want the 4 labelled", n)
	}
	if _, err := st.Label(ctx, ids[:1], fieldset.NotALeaf, "ana", t0); err != nil {
		t.Errorf("labelling with a full budget: %v", err)
	}
}

// TestOnlyChosenRulesFire: rules: [baseline] keeps random samples only.
func TestOnlyChosenRulesFire(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Rules, cfg.BaselineEvery = []string{fieldset.RuleBaseline}, time.Nanosecond
	k := NewKeeper(openStore(t), map[string]Config{"cam": cfg}, Options{Seed: 2})
	defer k.Close()
	o := Offer{Camera: "cam", Alert: true, Regions: []Region{region(quad[0], scored("Tomato___healthy", 0.3, "x", 0.25)), region(quad[1], scored("Tomato___Late_blight", 0.95, "x", 0.01))}}
	time.Sleep(time.Millisecond)
	got := k.rules(k.cams["cam"], &o)
	n := 0
	for _, r := range got {
		for _, rule := range r {
			if rule != fieldset.RuleBaseline {
				t.Errorf("rule %s fired with rules [baseline]", rule)
			}
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d baseline samples, want 1: %v", n, got)
	}
	bad := DefaultConfig()
	bad.Rules = []string{"sometimes"}
	if err := bad.Validate(); err == nil {
		t.Error("an unknown rule was accepted")
	}
}

// TestOfferCopiesRegions: the camera reuses its regions slice for the next
// sample at once; the writer must keep what was offered (the race
// detector flags a shared slice; the record's box shows a lost one).
func TestOfferCopiesRegions(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	cfg := DefaultConfig()
	cfg.BaselineEvery = 0
	k := NewKeeper(st, map[string]Config{"cam": cfg}, Options{FrameWidth: 200})
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	unsure := scored("Tomato___healthy", 0.4, "Tomato___Late_blight", 0.35)
	regions := []Region{region(quad[0], unsure)}
	m := frame(t, 640, 480, 9)
	offerOne(k, "cam", &m, t0, regions...)
	m.Close()
	regions[0].Box = quad[3] // the camera's next sample, written into the same array
	waitFor(t, "the writer", func() bool { n, _ := st.Count(ctx, Filter{}); return n == 1 })
	s, err := st.List(ctx, Filter{})
	if err != nil || len(s) != 1 || s[0].Box != [4]int{0, 0, 320, 240} {
		t.Fatalf("kept %+v (%v), want the region offered", s, err)
	}
}
