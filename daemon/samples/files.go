package samples

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/leafwatch/leafwatch/internal/fieldset"
)

// NewFrame is the downscaled copy of a frame some of whose regions are kept.
type NewFrame struct {
	ID     string
	Camera string
	Time   time.Time
	Width  int // of the source frame
	Height int
	JPEG   []byte
}

// NewSample is a region to keep: its record (label fields empty), its JPEG
// cut from the source frame at full resolution, and its perceptual hash.
type NewSample struct {
	Record fieldset.Record
	JPEG   []byte
	DHash  uint64
	Margin float32
}

// relPath is where a sample's or frame's JPEG lives, relative to the store:
// by camera and UTC day, named by id (so a file maps back to its record).
func relPath(kind, camera string, t time.Time, id string) string {
	return filepath.Join(kind, camera, t.UTC().Format("20060102"), id+".jpg")
}

// Add stores a frame and its kept regions. Files are written first (each
// to a temporary name, synced, renamed) and the records committed after,
// so a crash leaves at worst files without a record, which Recover removes
// at the next start; a failed commit removes the files at once.
func (s *Store) Add(ctx context.Context, fr NewFrame, kept []NewSample) error {
	if len(kept) == 0 {
		return nil
	}
	var written []string
	undo := func() {
		for _, p := range written {
			os.Remove(filepath.Join(s.dir, p))
		}
	}
	frameRel := relPath("frames", fr.Camera, fr.Time, fr.ID)
	if err := writeAtomic(filepath.Join(s.dir, frameRel), fr.JPEG); err != nil {
		return err
	}
	written = append(written, frameRel)
	rels := make([]string, len(kept))
	sums := make([]string, len(kept))
	for i, k := range kept {
		rels[i] = relPath("images", fr.Camera, fr.Time, k.Record.ID)
		if err := writeAtomic(filepath.Join(s.dir, rels[i]), k.JPEG); err != nil {
			undo()
			return err
		}
		written = append(written, rels[i])
		h := sha256.Sum256(k.JPEG)
		sums[i] = hex.EncodeToString(h[:])
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.tx(ctx, func(tx txn) error {
		if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO frames(id,camera,taken_at,width,height,file,bytes) VALUES(?,?,?,?,?,?,?)`,
			fr.ID, fr.Camera, fmtTime(fr.Time), fr.Width, fr.Height, frameRel, len(fr.JPEG)); err != nil {
			return err
		}
		for i, k := range kept {
			r := k.Record
			pre, _ := json.Marshal(r.Preprocess)
			top, _ := json.Marshal(r.Top)
			pred, prob := "", float32(0)
			if len(r.Top) > 0 {
				pred, prob = r.Top[0].Label, r.Top[0].Prob
			}
			if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO samples(id,frame_id,camera,taken_at,day,region,box_x,box_y,box_w,box_h,
				preprocess,model_version,model_sha256,engine,precision,threshold,top,pred,prob,margin,rules,dhash,file,bytes,sha256)
				VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
				r.ID, fr.ID, fr.Camera, fmtTime(r.Time), r.Time.UTC().Format("2006-01-02"), r.Region, r.Box[0], r.Box[1], r.Box[2], r.Box[3],
				string(pre), r.Model.Version, r.Model.SHA256, r.Model.Engine, r.Model.Precision, r.Threshold, string(top), pred, prob, k.Margin,
				joinRules(r.Rules), int64(k.DHash), rels[i], len(k.JPEG), sums[i]); err != nil {
				return err
			}
		}
		return bump(ctx, tx)
	})
	if err != nil {
		undo()
		return fmt.Errorf("samples: recording %d regions of frame %s: %w", len(kept), fr.ID, err)
	}
	return nil
}

// tx runs f in a transaction (BEGIN IMMEDIATE: it takes the write lock at
// once, so a busy database waits in busy_timeout instead of failing on
// the first write).
func (s *Store) tx(ctx context.Context, f func(txn) error) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	// database/sql's Tx cannot start with BEGIN IMMEDIATE: the body runs on
	// the connection, and this finishes the transaction by hand.
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return err
	}
	if err := f(conn); err != nil {
		conn.ExecContext(context.Background(), "ROLLBACK")
		return err
	}
	_, err = conn.ExecContext(ctx, "COMMIT")
	if err != nil {
		conn.ExecContext(context.Background(), "ROLLBACK")
	}
	return err
}

// writeAtomic writes data to path through a synced temporary file and a
// rename, then syncs the folder so the rename itself survives a power cut.
func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("samples: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("samples: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("samples: writing %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// RecoverReport says what Recover cleaned up.
type RecoverReport struct {
	RecordsWithoutFiles int      // records removed: their image was gone
	LabelledLost        []string // of those, the ids that had a label
	OrphanFiles         int      // files no record named (a crash between file and record)
	TempFiles           int      // half-written files
}

// Recover makes records and files agree after a crash or a disk someone
// tidied by hand: a record whose image (or frame) is gone is removed, a
// file no record names is removed. Only the daemon calls it, at start,
// before it keeps anything: another process's writer could otherwise be
// between its files and its record.
func (s *Store) Recover(ctx context.Context) (RecoverReport, error) {
	var rep RecoverReport
	s.mu.Lock()
	defer s.mu.Unlock()
	known, err := s.dropRecordsWithoutFiles(ctx, &rep)
	if err != nil {
		return rep, err
	}
	// Frames no sample refers to any more go too (record and file).
	if err := s.dropUnusedFrames(ctx); err != nil {
		return rep, err
	}
	frows, err := s.db.QueryContext(ctx, `SELECT file FROM frames`)
	if err != nil {
		return rep, err
	}
	for frows.Next() {
		var f string
		if err := frows.Scan(&f); err != nil {
			frows.Close()
			return rep, err
		}
		known[f] = true
	}
	frows.Close()
	if err := frows.Err(); err != nil {
		return rep, err
	}
	s.removeUnknownFiles(known, &rep)
	return rep, nil
}

// dropRecordsWithoutFiles deletes the records whose image or frame file is
// gone (naming the labelled ones in rep: they are reported, never dropped
// silently) and returns the files the remaining records use.
func (s *Store) dropRecordsWithoutFiles(ctx context.Context, rep *RecoverReport) (map[string]bool, error) {
	type rec struct{ id, file, frame, frameFile, label string }
	rows, err := s.db.QueryContext(ctx, `SELECT s.id, s.file, s.frame_id, f.file, COALESCE(s.label,'') FROM samples s JOIN frames f ON f.id = s.frame_id`)
	if err != nil {
		return nil, err
	}
	var recs []rec
	for rows.Next() {
		var r rec
		if err := rows.Scan(&r.id, &r.file, &r.frame, &r.frameFile, &r.label); err != nil {
			rows.Close()
			return nil, err
		}
		recs = append(recs, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	known := map[string]bool{}
	var gone []string
	for _, r := range recs {
		_, e1 := os.Stat(filepath.Join(s.dir, r.file))
		_, e2 := os.Stat(filepath.Join(s.dir, r.frameFile))
		if e1 != nil || e2 != nil {
			gone = append(gone, r.id)
			if r.label != "" {
				rep.LabelledLost = append(rep.LabelledLost, r.id)
			}
			continue
		}
		known[r.file], known[r.frameFile] = true, true
	}
	if len(gone) == 0 {
		return known, nil
	}
	err = s.tx(ctx, func(tx txn) error {
		for _, id := range gone {
			if _, err := tx.ExecContext(ctx, `DELETE FROM samples WHERE id = ?`, id); err != nil {
				return err
			}
		}
		return bump(ctx, tx)
	})
	if err != nil {
		return nil, err
	}
	rep.RecordsWithoutFiles = len(gone)
	return known, nil
}

// removeUnknownFiles deletes what a crash left in images/ and frames/:
// temporary files of unfinished writes, and files no record names.
func (s *Store) removeUnknownFiles(known map[string]bool, rep *RecoverReport) {
	for _, kind := range []string{"images", "frames"} {
		root := filepath.Join(s.dir, kind)
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			rel, _ := filepath.Rel(s.dir, p)
			switch {
			case strings.HasPrefix(d.Name(), ".") && strings.Contains(d.Name(), ".tmp-"):
				if os.Remove(p) == nil {
					rep.TempFiles++
				}
			case !known[rel]:
				if os.Remove(p) == nil {
					rep.OrphanFiles++
				}
			}
			return nil
		})
		removeEmptyDirs(root)
	}
}

// dropUnusedFrames removes frames no sample refers to, record then file.
func (s *Store) dropUnusedFrames(ctx context.Context) error {
	rows, err := s.db.QueryContext(ctx, `SELECT id, file FROM frames WHERE id NOT IN (SELECT frame_id FROM samples)`)
	if err != nil {
		return err
	}
	var ids, files []string
	for rows.Next() {
		var id, f string
		rows.Scan(&id, &f)
		ids, files = append(ids, id), append(files, f)
	}
	rows.Close()
	if len(ids) == 0 {
		return nil
	}
	err = s.tx(ctx, func(tx txn) error {
		for _, id := range ids {
			if _, err := tx.ExecContext(ctx, `DELETE FROM frames WHERE id = ?`, id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, f := range files {
		os.Remove(filepath.Join(s.dir, f))
	}
	return nil
}

// removeEmptyDirs removes the empty day and camera folders under root.
func removeEmptyDirs(root string) {
	var dirs []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && p != root {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		os.Remove(dirs[i]) // fails, harmlessly, on folders that are not empty
	}
}

// ReadImage returns a stored JPEG (a sample's region or frame), by its
// path relative to the store; anything outside the store is refused.
func (s *Store) ReadImage(rel string) ([]byte, error) {
	if !filepath.IsLocal(rel) {
		return nil, fmt.Errorf("samples: %q is not inside the store", rel)
	}
	b, err := os.ReadFile(filepath.Join(s.dir, rel))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("samples: %s: %w", rel, ErrNotFound)
	}
	return b, err
}

func unmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// txn is what a transaction body uses (a *sql.Conn inside BEGIN … COMMIT).
type txn interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}
