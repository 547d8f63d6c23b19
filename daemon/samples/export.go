package samples

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/leafwatch/leafwatch/internal/fieldset"
)

// ExportOptions choose what an export holds.
type ExportOptions struct {
	// LabelledOnly leaves out the unlabelled samples (records and images)
	// and the images of "unsure" ones: what finetune needs, and what
	// changes only when labels do (so a resumed download stays valid while
	// new samples are kept).
	LabelledOnly bool
	Camera       string // only this camera's samples
	// Labels are every label a person may give (the model's, not_a_leaf,
	// unsure), for the Label Studio labelling config.
	Labels []string
	// ImageURLPrefix starts each Label Studio task's image URL; the image's
	// path in the export follows. Default: Label Studio's local files,
	// "/data/local-files/?d=" + Name + "/".
	ImageURLPrefix string
	Name           string // the export folder's name (default leafwatch-export)
}

func (o ExportOptions) prefix() string {
	if o.ImageURLPrefix != "" {
		return o.ImageURLPrefix
	}
	name := o.Name
	if name == "" {
		name = "leafwatch-export"
	}
	return "/data/local-files/?d=" + name + "/"
}

// entry is one file of an export, in order.
type entry struct {
	name    string
	size    int64
	modTime time.Time
	sha     string // hex, when known without reading (images)
	src     string // a store file, or
	data    []byte // generated content
}

// plan lists an export's files: the images (labelled ones in their class
// folder, the rest in _unlabelled/), samples.jsonl, the Label Studio
// tasks and config, and SHA256SUMS last. The same store state gives the
// same list, byte for byte (resumable downloads depend on it).
func (s *Store) plan(ctx context.Context, opt ExportOptions) ([]entry, error) {
	all, err := s.List(ctx, Filter{Camera: opt.Camera})
	if err != nil {
		return nil, err
	}
	sort.Slice(all, func(i, j int) bool { return all[i].ID < all[j].ID })
	var images []entry
	var records bytes.Buffer
	var tasks []lsTask
	enc := json.NewEncoder(&records)
	enc.SetEscapeHTML(false)
	for _, x := range all {
		if opt.LabelledOnly && !x.Labelled() {
			continue
		}
		rec := x.Record
		dir := ""
		switch {
		case x.Trainable():
			dir = fieldset.ClassFolder(x.Label)
		case !opt.LabelledOnly:
			dir = fieldset.UnlabelledDir
		}
		if dir != "" {
			rec.Image = path.Join(dir, x.ID+".jpg")
			images = append(images, entry{name: rec.Image, size: x.Bytes, modTime: x.Time, sha: x.SHA256, src: x.File})
			tasks = append(tasks, newTask(rec, opt.prefix()+rec.Image))
		} else {
			rec.SHA256 = ""
		}
		if err := enc.Encode(rec); err != nil {
			return nil, err
		}
	}
	var out []entry
	out = append(out, images...)
	out = append(out, entry{name: fieldset.RecordsFile, data: records.Bytes()})
	tj, _ := json.MarshalIndent(tasks, "", " ")
	if tasks == nil {
		tj = []byte("[]")
	}
	out = append(out, entry{name: path.Join(fieldset.LabelStudio, "tasks.json"), data: append(tj, '\n')})
	out = append(out, entry{name: path.Join(fieldset.LabelStudio, "config.xml"), data: labelConfig(opt.Labels)})
	var sums bytes.Buffer
	for i := range out {
		e := &out[i]
		if e.data != nil {
			e.size = int64(len(e.data))
			h := sha256.Sum256(e.data)
			e.sha = hex.EncodeToString(h[:])
		}
		fmt.Fprintf(&sums, "%s  %s\n", e.sha, e.name)
	}
	out = append(out, entry{name: "SHA256SUMS", data: sums.Bytes(), size: int64(sums.Len())})
	return out, nil
}

// ExportTag identifies an export's content: the same tag, the same bytes.
// HTTP uses it as the ETag, so an interrupted download resumes only while
// the content is unchanged.
func (s *Store) ExportTag(ctx context.Context, opt ExportOptions) (string, error) {
	es, err := s.plan(ctx, opt)
	if err != nil {
		return "", err
	}
	return tagOf(es), nil
}

func tagOf(es []entry) string {
	h := sha256.Sum256(es[len(es)-1].data) // SHA256SUMS names every file's hash
	return hex.EncodeToString(h[:16])
}

// ExportReport counts what an export wrote.
type ExportReport struct {
	Labelled   int `json:"labelled"`   // images in class folders
	Unlabelled int `json:"unlabelled"` // images in _unlabelled
	Records    int `json:"records"`
	Bytes      int64
}

func report(es []entry) ExportReport {
	var r ExportReport
	for _, e := range es {
		switch {
		case strings.HasPrefix(e.name, fieldset.UnlabelledDir+"/"):
			r.Unlabelled++
		case e.src != "":
			r.Labelled++
		case e.name == fieldset.RecordsFile:
			r.Records = bytes.Count(e.data, []byte("\n"))
		}
		r.Bytes += e.size
	}
	return r
}

// Export writes the export into dir. It is built beside dir and renamed
// into place; an existing dir is replaced only when it is an earlier
// export (it holds samples.jsonl).
func (s *Store) Export(ctx context.Context, dir string, opt ExportOptions) (ExportReport, error) {
	if st, err := os.Stat(dir); err == nil {
		if !st.IsDir() || (!fieldset.IsExport(dir) && !isEmptyDir(dir)) {
			return ExportReport{}, fmt.Errorf("export: %s exists and is not an earlier export; choose another folder", dir)
		}
	}
	if opt.Name == "" {
		opt.Name = filepath.Base(dir)
	}
	es, err := s.plan(ctx, opt)
	if err != nil {
		return ExportReport{}, err
	}
	tmp := dir + ".partial"
	os.RemoveAll(tmp)
	for _, e := range es {
		if err := ctx.Err(); err != nil {
			os.RemoveAll(tmp)
			return ExportReport{}, err
		}
		dst := filepath.Join(tmp, filepath.FromSlash(e.name))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			os.RemoveAll(tmp)
			return ExportReport{}, fmt.Errorf("export: %w", err)
		}
		if err := s.copyEntry(e, dst); err != nil {
			os.RemoveAll(tmp)
			return ExportReport{}, err
		}
	}
	old := dir + ".old"
	os.RemoveAll(old)
	if _, err := os.Stat(dir); err == nil {
		if err := os.Rename(dir, old); err != nil {
			os.RemoveAll(tmp)
			return ExportReport{}, fmt.Errorf("export: %w", err)
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		return ExportReport{}, fmt.Errorf("export: %w", err)
	}
	os.RemoveAll(old)
	return report(es), nil
}

func isEmptyDir(dir string) bool {
	des, err := os.ReadDir(dir)
	return err == nil && len(des) == 0
}

func (s *Store) copyEntry(e entry, dst string) error {
	if e.data != nil {
		return os.WriteFile(dst, e.data, 0o644)
	}
	r, err := s.openChecked(e)
	if err != nil {
		return err
	}
	defer r.Close()
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return fmt.Errorf("export: %s: %w", e.name, err)
	}
	return f.Close()
}

// ErrChangedDuringExport: a sample's image went (evicted) or changed
// between planning an export and reading it.
var ErrChangedDuringExport = errors.New("the samples changed during the export; export again")

// openChecked opens a store image whose size must still be the recorded one.
func (s *Store) openChecked(e entry) (io.ReadCloser, error) {
	f, err := os.Open(filepath.Join(s.dir, e.src))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w", e.name, ErrChangedDuringExport)
		}
		return nil, err
	}
	if st, err := f.Stat(); err != nil || st.Size() != e.size {
		f.Close()
		return nil, fmt.Errorf("%s: %w", e.name, ErrChangedDuringExport)
	}
	return f, nil
}

// TarInfo describes an export as a tar stream before it is written.
type TarInfo struct {
	Size   int64
	Tag    string
	Report ExportReport
	es     []entry
}

// PlanTar plans an export as a tar stream (its exact size and tag).
func (s *Store) PlanTar(ctx context.Context, opt ExportOptions) (*TarInfo, error) {
	es, err := s.plan(ctx, opt)
	if err != nil {
		return nil, err
	}
	var n countWriter
	if err := writeTar(&n, es, nil); err != nil {
		return nil, err
	}
	return &TarInfo{Size: int64(n), Tag: tagOf(es), Report: report(es), es: es}, nil
}

// WriteTar writes the planned tar stream from byte offset skip on (a
// resumed download), under the folder name root.
func (s *Store) WriteTar(w io.Writer, t *TarInfo, skip int64) error {
	return writeTar(&skipWriter{w: w, skip: skip}, t.es, s)
}

// writeTar writes the entries; with s nil, images are zeros of their size
// (to count the stream's length without reading them).
func writeTar(w io.Writer, es []entry, s *Store) error {
	tw := tar.NewWriter(w)
	for _, e := range es {
		hdr := &tar.Header{Name: e.name, Mode: 0o644, Size: e.size, ModTime: e.modTime.UTC().Truncate(time.Second), Typeflag: tar.TypeReg,
			Uname: "leafwatch", Gname: "leafwatch", Format: tar.FormatPAX}
		if e.modTime.IsZero() {
			hdr.ModTime = time.Unix(0, 0)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		switch {
		case e.data != nil:
			if _, err := tw.Write(e.data); err != nil {
				return err
			}
		case s == nil:
			if _, err := io.CopyN(tw, zeros{}, e.size); err != nil {
				return err
			}
		default:
			r, err := s.openChecked(e)
			if err != nil {
				return err
			}
			_, err = io.CopyN(tw, r, e.size)
			r.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", e.name, err)
			}
		}
	}
	return tw.Close()
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// skipWriter drops the first skip bytes written to it.
type skipWriter struct {
	w    io.Writer
	skip int64
}

func (s *skipWriter) Write(p []byte) (int, error) {
	n := len(p)
	if s.skip >= int64(n) {
		s.skip -= int64(n)
		return n, nil
	}
	p = p[s.skip:]
	s.skip = 0
	if _, err := s.w.Write(p); err != nil {
		return 0, err
	}
	return n, nil
}
