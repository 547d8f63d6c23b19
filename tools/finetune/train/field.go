package train

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sort"

	"github.com/leafwatch/leafwatch/internal/fieldset"
)

// Sources of a sample.
const (
	SourceData  = 0 // the --data folder (PlantVillage)
	SourceField = 1 // a --field export (samples kept on a device)
)

// SourceNames are the sources as reports name them.
var SourceNames = []string{"plantvillage", "field"}

// FieldOptions say how field samples join a dataset.
type FieldOptions struct {
	Dirs []string // export folders (leafwatchd samples export, finetune pull)
	// ValFrac of the field samples validate: whole camera-days, so that
	// near-identical frames of one leaf never sit on both sides.
	ValFrac float64
	// RejectClass trains "not a leaf" (not_a_leaf) as a class of its own;
	// without it those samples are left out.
	RejectClass bool
	Seed        uint64
}

// FieldInfo says what the field samples became.
type FieldInfo struct {
	Records    int      // in samples.jsonl, all folders
	Train, Val int      // field samples training and validating
	Test       int      // baseline samples of the validation camera-days: the honest field test set
	Baseline   int      // baseline samples labelled, all
	Groups     int      // camera-days
	ValGroups  []string // camera/day of the validation side
	SplitBy    string   // "camera-day", or "frame" when there is one camera-day only
	NotALeaf   int      // not_a_leaf samples (a class with --reject-class, else left out)
	Unsure     int      // never trained
	Unlabelled int
	NewClasses []string // labels the --data folder did not have
	// KeptWith are the records' own answers (the model the samples were
	// kept with), per sample of the test and validation sides.
	KeptWithTest, KeptWithVal []string
}

// AddField adds the labelled samples of the export folders to d: each
// label is a class (the --data classes stay, those without field samples
// included); samples are split by camera and day, the validation side's
// baseline samples held out as the field test set (d.Test).
func AddField(d *Dataset, opt FieldOptions) (*FieldInfo, error) {
	info := &FieldInfo{SplitBy: "camera-day"}
	recs, err := loadFieldRecords(opt, info)
	if err != nil || len(recs) == 0 {
		return info, err
	}
	classes := mergeClasses(d, recs, info)
	group, val := splitFieldGroups(recs, opt, info)
	for _, r := range recs {
		s := Sample{Path: r.path, Label: slices.Index(classes, r.Label), Source: SourceField, Camera: r.Camera, Day: r.Day, KeptWith: r.Predicted(), Baseline: r.Baseline()}
		switch {
		case !val[group(r)]:
			d.Train = append(d.Train, s)
			info.Train++
		case r.Baseline():
			d.Test = append(d.Test, s)
			info.Test++
			info.KeptWithTest = append(info.KeptWithTest, s.KeptWith)
		default:
			d.Val = append(d.Val, s)
			info.Val++
			info.KeptWithVal = append(info.KeptWithVal, s.KeptWith)
		}
	}
	return info, nil
}

// fieldRecord is a labelled field sample and its image's absolute path.
type fieldRecord struct {
	fieldset.Record
	path string
}

// loadFieldRecords reads the exports' records and keeps the labelled
// ones (not-a-leaf only with a reject class), counting all in info.
func loadFieldRecords(opt FieldOptions, info *FieldInfo) ([]fieldRecord, error) {
	var recs []fieldRecord
	for _, dir := range opt.Dirs {
		rs, err := fieldset.Load(dir)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			info.Records++
			switch {
			case r.Label == "":
				info.Unlabelled++
				continue
			case r.Label == fieldset.Unsure:
				info.Unsure++
				continue
			case r.Label == fieldset.NotALeaf:
				info.NotALeaf++
				if !opt.RejectClass {
					continue
				}
			}
			if r.Baseline() {
				info.Baseline++
			}
			p, _ := filepath.Abs(filepath.Join(dir, r.Image))
			recs = append(recs, fieldRecord{r, p})
		}
	}
	return recs, nil
}

// mergeClasses adds the field labels the data lacks to its classes (sorted
// once more) and renumbers the data's samples; it returns the classes.
func mergeClasses(d *Dataset, recs []fieldRecord, info *FieldInfo) []string {
	classes := slices.Clone(d.Classes)
	for _, r := range recs {
		if !slices.Contains(classes, r.Label) {
			classes = append(classes, r.Label)
			info.NewClasses = append(info.NewClasses, r.Label)
		}
	}
	sort.Strings(classes)
	remap := make([]int, len(d.Classes))
	for i, c := range d.Classes {
		remap[i] = slices.Index(classes, c)
	}
	for _, part := range []*[]Sample{&d.Train, &d.Val, &d.Test} {
		for i := range *part {
			(*part)[i].Label = remap[(*part)[i].Label]
		}
	}
	d.Classes = classes
	return classes
}

// splitFieldGroups chooses the validation groups: whole camera-days (a
// frame each when there is only one), drawn at random until they hold
// opt.ValFrac of the samples, never all of them. It returns the grouping
// and the validation groups.
func splitFieldGroups(recs []fieldRecord, opt FieldOptions, info *FieldInfo) (group func(fieldRecord) string, val map[string]bool) {
	group = func(r fieldRecord) string { return r.Camera + "/" + r.Day }
	if r0 := recs[0]; !slices.ContainsFunc(recs, func(r fieldRecord) bool { return group(r) != group(r0) }) {
		info.SplitBy = "frame"
		group = func(r fieldRecord) string { return r.FrameID }
	}
	var groups []string
	size := map[string]int{}
	for _, r := range recs {
		if size[group(r)] == 0 {
			groups = append(groups, group(r))
		}
		size[group(r)]++
	}
	sort.Strings(groups)
	info.Groups = len(groups)
	rng := rand.New(rand.NewPCG(opt.Seed, 0xf1e1d))
	rng.Shuffle(len(groups), func(i, j int) { groups[i], groups[j] = groups[j], groups[i] })
	val = map[string]bool{}
	want := int(float64(len(recs))*opt.ValFrac + 0.5)
	n := 0
	for _, g := range groups {
		if n >= want || len(val) == len(groups)-1 {
			break
		}
		val[g] = true
		n += size[g]
	}
	if info.SplitBy == "camera-day" {
		for g := range val {
			info.ValGroups = append(info.ValGroups, g)
		}
		sort.Strings(info.ValGroups)
	}
	return group, val
}

// LoadExport reads an export folder as a test set: every trainable record
// (not_a_leaf included when the classes have it), labels mapped by name to
// classes; records whose label is not among them are counted, not used.
func LoadExport(dir string, classes []string) (*Dataset, []string, error) {
	recs, err := fieldset.Load(dir)
	if err != nil {
		return nil, nil, err
	}
	d := &Dataset{Root: dir, Classes: classes}
	var foreign []string
	for _, r := range recs {
		if !r.Trainable() {
			continue
		}
		i := slices.Index(classes, r.Label)
		if i < 0 {
			foreign = append(foreign, r.ID+": "+r.Label)
			continue
		}
		p, _ := filepath.Abs(filepath.Join(dir, r.Image))
		d.Test = append(d.Test, Sample{Path: p, Label: i, Source: SourceField, Camera: r.Camera, Day: r.Day, KeptWith: r.Predicted(), Baseline: r.Baseline()})
	}
	if len(d.Test) == 0 {
		return nil, foreign, fmt.Errorf("%s holds no labelled sample of this model's classes", dir)
	}
	return d, foreign, nil
}
