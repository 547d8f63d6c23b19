package samples

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/leafwatch/leafwatch/internal/fieldset"
)

// Labelled is the outcome of one labelling action.
type Labelled struct {
	Batch   int64    `json:"batch"`   // undo takes the whole batch back
	Changed int      `json:"changed"` // samples whose label changed
	Same    int      `json:"same"`    // already had this label
	Missing []string `json:"missing,omitempty"`
}

// Label gives the samples ids the label, as one action of who: a later
// Undo by the same person takes the whole action back. The caller checks
// that the label is one people may give (Labels); this refuses labels
// that cannot name a class folder.
func (s *Store) Label(ctx context.Context, ids []string, label, who string, at time.Time) (Labelled, error) {
	var res Labelled
	if !fieldset.ValidLabel(label) {
		return res, fmt.Errorf("label %q cannot name a class folder", label)
	}
	if who == "" {
		return res, errors.New("label: who labels is required")
	}
	if len(ids) == 0 {
		return res, errors.New("label: no samples given")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.tx(ctx, func(tx txn) error {
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(batch),0)+1 FROM label_log`).Scan(&res.Batch); err != nil {
			return err
		}
		for _, id := range ids {
			var old, oldBy, oldAt sql.NullString
			err := tx.QueryRowContext(ctx, `SELECT label, labelled_by, labelled_at FROM samples WHERE id = ?`, id).Scan(&old, &oldBy, &oldAt)
			if errors.Is(err, sql.ErrNoRows) {
				res.Missing = append(res.Missing, id)
				continue
			}
			if err != nil {
				return err
			}
			if old.Valid && old.String == label {
				res.Same++
				continue
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO label_log(batch,sample_id,old_label,old_by,old_at,new_label,by,at) VALUES(?,?,?,?,?,?,?,?)`,
				res.Batch, id, old, oldBy, oldAt, label, who, fmtTime(at)); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE samples SET label=?, labelled_by=?, labelled_at=? WHERE id=?`, label, who, fmtTime(at), id); err != nil {
				return err
			}
			res.Changed++
		}
		if res.Changed == 0 {
			return nil
		}
		return bump(ctx, tx)
	})
	return res, err
}

// Undone is the outcome of an undo.
type Undone struct {
	Batch    int64  `json:"batch"`
	Restored int    `json:"restored"`
	Skipped  int    `json:"skipped"` // relabelled by someone since: left as they are
	Label    string `json:"label"`   // the label the action had given
}

// ErrNothingToUndo is returned when who has no action left to undo.
var ErrNothingToUndo = errors.New("nothing to undo")

// Undo takes back who's last labelling action that is not undone yet:
// each sample gets its previous label (or none) back, unless someone
// labelled it again since.
func (s *Store) Undo(ctx context.Context, who string) (Undone, error) {
	var u Undone
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.tx(ctx, func(tx txn) error {
		err := tx.QueryRowContext(ctx, `SELECT batch, new_label FROM label_log WHERE by = ? AND undone = 0 ORDER BY batch DESC LIMIT 1`, who).Scan(&u.Batch, &u.Label)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNothingToUndo
		}
		if err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT seq, sample_id, old_label, old_by, old_at, new_label, by, at FROM label_log WHERE batch = ?`, u.Batch)
		if err != nil {
			return err
		}
		type entry struct {
			seq                   int64
			id                    string
			old, oldBy, oldAt     sql.NullString
			newLabel, by, labelAt string
		}
		var es []entry
		for rows.Next() {
			var e entry
			if err := rows.Scan(&e.seq, &e.id, &e.old, &e.oldBy, &e.oldAt, &e.newLabel, &e.by, &e.labelAt); err != nil {
				rows.Close()
				return err
			}
			es = append(es, e)
		}
		rows.Close()
		for _, e := range es {
			// Only where the sample still carries this action's label.
			res, err := tx.ExecContext(ctx, `UPDATE samples SET label=?, labelled_by=?, labelled_at=? WHERE id=? AND label=? AND labelled_by=? AND labelled_at=?`,
				e.old, e.oldBy, e.oldAt, e.id, e.newLabel, e.by, e.labelAt)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 1 {
				u.Restored++
			} else {
				u.Skipped++
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE label_log SET undone = 1 WHERE batch = ?`, u.Batch); err != nil {
			return err
		}
		return bump(ctx, tx)
	})
	return u, err
}

// Delete removes samples on a person's explicit request (the command
// line), labelled or not; their files go after the records.
func (s *Store) Delete(ctx context.Context, ids []string) (int, error) {
	var files []string
	n := 0
	s.mu.Lock()
	err := s.tx(ctx, func(tx txn) error {
		for _, id := range ids {
			var f string
			err := tx.QueryRowContext(ctx, `SELECT file FROM samples WHERE id = ?`, id).Scan(&f)
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM samples WHERE id = ?`, id); err != nil {
				return err
			}
			files = append(files, f)
			n++
		}
		return bump(ctx, tx)
	})
	s.mu.Unlock()
	if err != nil {
		return 0, err
	}
	for _, f := range files {
		os.Remove(filepath.Join(s.dir, f))
	}
	return n, s.withLock(func() error { return s.dropUnusedFrames(ctx) })
}

func (s *Store) withLock(f func() error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return f()
}
