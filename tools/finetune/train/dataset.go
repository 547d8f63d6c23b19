package train

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/leafwatch/leafwatch/vision"
)

// Sample is one labelled image file.
type Sample struct {
	Path  string
	Label int
	// Source is SourceData or SourceField; field samples also carry their
	// camera and day, the model's own answer when they were kept, and
	// whether the baseline rule kept them (at random).
	Source      int
	Camera, Day string
	KeptWith    string
	Baseline    bool
}

// Dataset is an image-folder dataset: one folder per class.
type Dataset struct {
	Root    string
	Classes []string // sorted once; saved in the checkpoint
	Train   []Sample
	Val     []Sample
	// Test is evaluated once, at the end, and never chosen by: the field
	// samples kept at random on the validation side (AddField), or a whole
	// test folder (finetune eval).
	Test    []Sample
	Skipped []string // files left out, with the reason
}

var imageExt = map[string]bool{".jpg": true, ".jpeg": true, ".png": true, ".bmp": true}

// LoadFolder reads root. If root has train/ and val/ folders they are used
// as they are; otherwise each class is split with a seeded stratified split
// keeping valFrac for validation.
func LoadFolder(root string, valFrac float64, seed uint64) (*Dataset, error) {
	if st, err := os.Stat(root); err != nil {
		return nil, fmt.Errorf("dataset: %w", err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("dataset %s is a file: give a folder with one sub-folder per class", root)
	}
	d := &Dataset{Root: root}
	trainDir, valDir := filepath.Join(root, "train"), filepath.Join(root, "val")
	if isDir(trainDir) && isDir(valDir) {
		classes, err := classFolders(trainDir)
		if err != nil {
			return nil, err
		}
		d.Classes = classes
		if d.Train, err = d.scan(trainDir, classes, true); err != nil {
			return nil, err
		}
		if d.Val, err = d.scan(valDir, classes, false); err != nil {
			return nil, err
		}
		return d, nil
	}
	if valFrac <= 0 || valFrac >= 1 {
		return nil, fmt.Errorf("validation fraction %v must be between 0 and 1", valFrac)
	}
	classes, err := classFolders(root)
	if err != nil {
		return nil, err
	}
	d.Classes = classes
	all, err := d.scan(root, classes, true)
	if err != nil {
		return nil, err
	}
	byClass := make([][]Sample, len(classes))
	for _, s := range all {
		byClass[s.Label] = append(byClass[s.Label], s)
	}
	rng := rand.New(rand.NewPCG(seed, 0x5917))
	for c, ss := range byClass {
		rng.Shuffle(len(ss), func(i, j int) { ss[i], ss[j] = ss[j], ss[i] })
		nVal := int(float64(len(ss))*valFrac + 0.5)
		if len(ss) >= 2 {
			nVal = max(1, min(nVal, len(ss)-1))
		} else {
			nVal = 0
		}
		d.Val = append(d.Val, ss[:nVal]...)
		d.Train = append(d.Train, ss[nVal:]...)
		_ = c
	}
	return d, nil
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

func classFolders(root string) ([]string, error) {
	des, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("dataset: %w", err)
	}
	var classes []string
	for _, de := range des {
		if de.IsDir() && !strings.HasPrefix(de.Name(), ".") {
			classes = append(classes, de.Name())
		}
	}
	sort.Strings(classes)
	switch len(classes) {
	case 0:
		return nil, fmt.Errorf("dataset %s has no class folders: put each class's images in its own sub-folder (e.g. %s/Tomato___healthy/*.jpg)", root, root)
	case 1:
		return nil, fmt.Errorf("dataset %s has only one class folder (%q): a classifier needs at least two; add a folder per class", root, classes[0])
	}
	return classes, nil
}

// scan lists the images of each class folder under dir. Every other file —
// not an image by name, empty, truncated, damaged, too small — is recorded
// in Skipped with the reason and left out.
func (d *Dataset) scan(dir string, classes []string, requireEach bool) ([]Sample, error) {
	var out []Sample
	var empty []string
	for ci, c := range classes {
		cdir := filepath.Join(dir, c)
		des, err := os.ReadDir(cdir)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && !requireEach {
				continue
			}
			return nil, fmt.Errorf("dataset: %w", err)
		}
		n := 0
		for _, de := range des {
			p := filepath.Join(cdir, de.Name())
			if de.IsDir() {
				d.Skipped = append(d.Skipped, fmt.Sprintf("%s: a folder inside a class folder (not searched)", p))
				continue
			}
			if !imageExt[strings.ToLower(filepath.Ext(de.Name()))] {
				d.Skipped = append(d.Skipped, fmt.Sprintf("%s: not an image file by its name (accepted: .jpg, .jpeg, .png, .bmp)", p))
				continue
			}
			if err := checkImage(p); err != nil {
				d.Skipped = append(d.Skipped, fmt.Sprintf("%s: %v", p, err))
				continue
			}
			out = append(out, Sample{Path: p, Label: ci})
			n++
		}
		if n == 0 && requireEach {
			empty = append(empty, cdir)
		}
	}
	if len(empty) > 0 {
		return nil, fmt.Errorf("class folders without readable images: %s — add images (.jpg, .png, .bmp) or remove the folders", strings.Join(empty, ", "))
	}
	slices.SortFunc(out, func(a, b Sample) int { return strings.Compare(a.Path, b.Path) })
	return out, nil
}

// checkImage reads the file and walks its structure (vision.CheckImage):
// no decode, yet it catches empty, damaged and truncated files, which a
// decoder would turn into half-grey training images.
func checkImage(p string) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	return vision.CheckImage(b)
}

// ClassCounts returns how many training images each class has.
func (d *Dataset) ClassCounts() []int {
	n := make([]int, len(d.Classes))
	for _, s := range d.Train {
		n[s.Label]++
	}
	return n
}
