package vision

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"gocv.io/x/gocv"
)

var imageExts = map[string]bool{".jpg": true, ".jpeg": true, ".png": true, ".bmp": true, ".webp": true, ".tif": true, ".tiff": true}

// folderReader yields the images of a folder in name order. Unreadable
// images are skipped with a warning, never fatal.
type folderReader struct {
	files []string
	i     int
	loop  bool
	skip  func()
	log   *slog.Logger
	once  sync.Once
}

func openFolder(s SourceSpec, skip func(), log *slog.Logger) (reader, error) {
	des, err := os.ReadDir(s.Target)
	if err != nil {
		return nil, errPermanent{fmt.Errorf("image folder: %w", err)}
	}
	var files []string
	for _, de := range des {
		if !de.IsDir() && imageExts[strings.ToLower(filepath.Ext(de.Name()))] {
			files = append(files, filepath.Join(s.Target, de.Name()))
		}
	}
	slices.Sort(files)
	if len(files) == 0 {
		return nil, errPermanent{fmt.Errorf("image folder %s has no images (.jpg, .png, .bmp, .webp, .tif)", s.Target)}
	}
	return &folderReader{files: files, loop: s.Loop, skip: skip, log: log}, nil
}

func (r *folderReader) Interruptible() bool { return true }
func (r *folderReader) Pulled() bool        { return true }
func (r *folderReader) Close()              { r.once.Do(func() {}) }

func (r *folderReader) Read(dst *gocv.Mat) error {
	bad := 0
	for {
		if r.i >= len(r.files) {
			if !r.loop {
				return errEnd
			}
			r.i = 0
		}
		f := r.files[r.i]
		r.i++
		err := ReadImage(f, dst)
		if err == nil {
			return nil
		}
		r.skip()
		r.log.Warn("skipping unreadable image", "file", f, "err", err)
		if bad++; bad >= len(r.files) {
			return errPermanent{fmt.Errorf("no image in the folder can be read")}
		}
	}
}
