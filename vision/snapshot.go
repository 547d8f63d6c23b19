package vision

import (
	"errors"
	"fmt"
	"image"
	"image/color"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"gocv.io/x/gocv"
)

// TileMark is one box drawn on a snapshot.
type TileMark struct {
	Box        image.Rectangle
	Label      string
	Confidence float32
	Alert      bool // drawn in red
}

// Overlay is the decision drawn on a snapshot.
type Overlay struct {
	Camera     string
	Label      string
	Confidence float32
	Alert      bool
	Time       time.Time
	Tiles      []TileMark
}

var (
	colorOK    = color.RGBA{40, 200, 60, 0}
	colorAlert = color.RGBA{230, 40, 40, 0}
	colorText  = color.RGBA{255, 255, 255, 0}
	colorShade = color.RGBA{0, 0, 0, 0}
)

// EncodeSnapshot draws ov on a copy of frame scaled to at most maxWidth
// pixels wide and encodes it as JPEG at quality (1..100).
func EncodeSnapshot(frame gocv.Mat, ov Overlay, maxWidth, quality int) ([]byte, error) {
	if frame.Empty() {
		return nil, errors.New("snapshot: empty frame")
	}
	if quality < 1 || quality > 100 {
		return nil, fmt.Errorf("snapshot: JPEG quality %d outside 1..100", quality)
	}
	img := gocv.NewMat()
	defer img.Close()
	scale := 1.0
	if maxWidth > 0 && frame.Cols() > maxWidth {
		scale = float64(maxWidth) / float64(frame.Cols())
		gocv.Resize(frame, &img, image.Point{maxWidth, int(float64(frame.Rows())*scale + 0.5)}, 0, 0, gocv.InterpolationArea)
	} else {
		frame.CopyTo(&img)
	}
	thick := max(2, img.Cols()/300)
	fs := max(0.4, float64(img.Cols())/1200)
	for _, t := range ov.Tiles {
		r := image.Rect(int(float64(t.Box.Min.X)*scale), int(float64(t.Box.Min.Y)*scale),
			int(float64(t.Box.Max.X)*scale)-1, int(float64(t.Box.Max.Y)*scale)-1)
		c := colorOK
		if t.Alert {
			c = colorAlert
		}
		gocv.Rectangle(&img, r, c, thick)
		gocv.PutText(&img, fmt.Sprintf("%s %.0f%%", shortLabel(t.Label), t.Confidence*100), r.Min.Add(image.Pt(4, int(18*fs))),
			gocv.FontHersheySimplex, fs*0.6, c, thick)
	}
	c := colorOK
	if ov.Alert {
		c = colorAlert
	}
	banner := fmt.Sprintf("%s  %s %.0f%%", ov.Camera, shortLabel(ov.Label), ov.Confidence*100)
	if !ov.Time.IsZero() {
		banner += "  " + ov.Time.UTC().Format("2006-01-02 15:04:05Z")
	}
	bh := int(34 * fs)
	gocv.Rectangle(&img, image.Rect(0, 0, img.Cols(), bh), colorShade, -1)
	gocv.Rectangle(&img, image.Rect(0, bh-max(2, thick), img.Cols(), bh), c, -1)
	gocv.PutText(&img, banner, image.Pt(6, int(24*fs)), gocv.FontHersheySimplex, fs*0.7, colorText, thick)
	buf, err := gocv.IMEncodeWithParams(gocv.JPEGFileExt, img, []int{gocv.IMWriteJpegQuality, quality})
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	defer buf.Close()
	return append([]byte(nil), buf.GetBytes()...), nil
}

// shortLabel keeps snapshots readable: OpenCV's Hershey font has no
// accents, so labels are reduced to "Crop: condition" in ASCII.
func shortLabel(l string) string {
	c, cond, ok := strings.Cut(l, "___")
	if !ok {
		return strings.ReplaceAll(l, "_", " ")
	}
	return strings.TrimSpace(strings.ReplaceAll(c, "_", " ")) + ": " + strings.TrimSpace(strings.ReplaceAll(cond, "_", " "))
}

// SnapshotDir stores JPEGs in a folder kept under a byte cap; the oldest
// files go first. "Oldest" is by a sequence number in the file name, not
// by modification time: a board that boots with a wrong clock and is
// corrected by NTP would otherwise delete its newest snapshots.
type SnapshotDir struct {
	dir      string
	maxBytes int64
	mu       sync.Mutex
	next     uint64
}

// seqName is "<20-digit sequence>-<name>".
func seqOf(name string) (uint64, bool) {
	i := strings.IndexByte(name, '-')
	if i != 20 {
		return 0, false
	}
	n, err := strconv.ParseUint(name[:i], 10, 64)
	return n, err == nil
}

// OpenSnapshotDir creates the folder if needed and removes the temporary
// files of writes cut short.
func OpenSnapshotDir(dir string, maxBytes int64) (*SnapshotDir, error) {
	if maxBytes <= 0 {
		return nil, fmt.Errorf("snapshot dir %s: byte cap must be positive", dir)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("snapshot dir: %w", err)
	}
	d := &SnapshotDir{dir: dir, maxBytes: maxBytes, next: 1}
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("snapshot dir: %w", err)
	}
	for _, de := range des {
		if strings.HasPrefix(de.Name(), ".tmp-") {
			os.Remove(filepath.Join(dir, de.Name()))
		} else if n, ok := seqOf(de.Name()); ok && n >= d.next {
			d.next = n + 1
		}
	}
	return d, nil
}

// Dir is the folder path.
func (d *SnapshotDir) Dir() string { return d.dir }

// Save writes a snapshot atomically as "<sequence>-<name>" and trims the
// folder to the cap. name must be a plain file name. It returns the path.
func (d *SnapshotDir) Save(name string, jpeg []byte) (string, error) {
	if name == "" || strings.ContainsAny(name, `/\`) || name[0] == '.' {
		return "", fmt.Errorf("snapshot name %q is not a plain file name", name)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	full := fmt.Sprintf("%020d-%s", d.next, name)
	p := filepath.Join(d.dir, full)
	tmp := filepath.Join(d.dir, ".tmp-"+full)
	if err := os.WriteFile(tmp, jpeg, 0o640); err != nil {
		os.Remove(tmp) // a full disk leaves a partial file behind
		return "", fmt.Errorf("snapshot: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("snapshot: %w", err)
	}
	d.next++
	return p, d.trim()
}

func (d *SnapshotDir) trim() error {
	des, err := os.ReadDir(d.dir)
	if err != nil {
		return err
	}
	type fi struct {
		name string
		seq  uint64
		size int64
	}
	var files []fi
	var total int64
	for _, de := range des {
		if de.IsDir() || strings.HasPrefix(de.Name(), ".") {
			continue
		}
		info, err := de.Info()
		if err != nil {
			continue
		}
		seq, _ := seqOf(de.Name()) // files of older versions sort first (0)
		files = append(files, fi{de.Name(), seq, info.Size()})
		total += info.Size()
	}
	sort.Slice(files, func(i, j int) bool {
		if files[i].seq != files[j].seq {
			return files[i].seq < files[j].seq
		}
		return files[i].name < files[j].name
	})
	for i := 0; total > d.maxBytes && i < len(files)-1; i++ {
		if err := os.Remove(filepath.Join(d.dir, files[i].name)); err == nil {
			total -= files[i].size
		}
	}
	return nil
}

// FitJPEG re-encodes a JPEG until it fits in maxBytes: lower quality
// first, then smaller. It fails when even a 160-pixel-wide version at
// quality 40 is too large.
func FitJPEG(jpeg []byte, maxBytes int) ([]byte, error) {
	if len(jpeg) <= maxBytes {
		return jpeg, nil
	}
	img, err := gocv.IMDecode(jpeg, gocv.IMReadColor)
	if err != nil || img.Empty() {
		img.Close()
		return nil, fmt.Errorf("thumbnail: the snapshot does not decode")
	}
	defer img.Close()
	cur := img
	small := gocv.NewMat()
	defer small.Close()
	for w := img.Cols(); w >= 160; w = w * 2 / 3 {
		if w != img.Cols() {
			gocv.Resize(img, &small, image.Point{w, max(1, img.Rows()*w/img.Cols())}, 0, 0, gocv.InterpolationArea)
			cur = small
		}
		for _, q := range []int{75, 60, 40} {
			buf, err := gocv.IMEncodeWithParams(gocv.JPEGFileExt, cur, []int{gocv.IMWriteJpegQuality, q})
			if err != nil {
				return nil, fmt.Errorf("thumbnail: %w", err)
			}
			b := buf.GetBytes()
			if len(b) <= maxBytes {
				out := append([]byte(nil), b...)
				buf.Close()
				return out, nil
			}
			buf.Close()
		}
	}
	return nil, fmt.Errorf("thumbnail: no smaller JPEG fits in %d bytes", maxBytes)
}
