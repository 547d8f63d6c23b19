package samples

import (
	"context"
	"os"
	"path/filepath"
)

// Budget is the store's disk use against its cap.
type Budget struct {
	Used     int64 // bytes of images (regions and frames), as recorded
	Labelled int64 // of which labelled samples and their frames
	Evicted  int   // unlabelled samples removed by this call
	// Full: labelled samples alone reach the cap. Nothing may be removed
	// to make room (a labelled sample is never deleted silently), so
	// keeping stops until the cap is raised or samples are exported and
	// deleted by hand.
	Full bool
}

// evictTo is how far below the cap eviction goes, so that not every new
// sample evicts one.
const evictTo = 0.9

// Enforce keeps the store within maxBytes: beyond it, the oldest
// unlabelled samples go first (down to 90% of the cap), never a labelled
// one.
func (s *Store) Enforce(ctx context.Context, maxBytes int64) (Budget, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b Budget
	var err error
	if b.Used, err = s.bytesUsed(ctx, s.db); err != nil {
		return b, err
	}
	if b.Labelled, err = s.labelledBytes(ctx); err != nil {
		return b, err
	}
	b.Full = b.Labelled >= maxBytes
	if b.Used <= maxBytes {
		return b, nil
	}
	target := int64(float64(maxBytes) * evictTo)
	for b.Used > target {
		freed, n, err := s.evictOldest(ctx, 200, b.Used-target)
		if err != nil {
			return b, err
		}
		if n == 0 {
			break // only labelled samples left
		}
		b.Evicted += n
		b.Used -= freed
	}
	return b, nil
}

// labelledBytes is what labelled samples take, their frames included.
func (s *Store) labelledBytes(ctx context.Context) (int64, error) {
	var a, f int64
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(SUM(bytes),0) FROM samples WHERE label IS NOT NULL`).Scan(&a); err != nil {
		return 0, err
	}
	err := s.db.QueryRowContext(ctx, `SELECT COALESCE(SUM(bytes),0) FROM frames WHERE id IN (SELECT frame_id FROM samples WHERE label IS NOT NULL)`).Scan(&f)
	return a + f, err
}

// evictOldest removes up to limit of the oldest unlabelled samples, and
// the frames left without a sample, stopping once need bytes are freed.
// Records go first, files after the commit: a crash between leaves files
// that Recover removes.
func (s *Store) evictOldest(ctx context.Context, limit int, need int64) (freed int64, n int, err error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, frame_id, file, bytes FROM samples WHERE label IS NULL ORDER BY taken_at, id LIMIT ?`, limit)
	if err != nil {
		return 0, 0, err
	}
	type victim struct {
		id, frame, file string
		bytes           int64
	}
	var vs []victim
	for rows.Next() {
		var v victim
		if err := rows.Scan(&v.id, &v.frame, &v.file, &v.bytes); err != nil {
			rows.Close()
			return 0, 0, err
		}
		vs = append(vs, v)
	}
	rows.Close()
	var files []string
	err = s.tx(ctx, func(tx txn) error {
		for _, v := range vs {
			if freed >= need {
				break
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM samples WHERE id = ?`, v.id); err != nil {
				return err
			}
			files = append(files, v.file)
			freed += v.bytes
			n++
			var left int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM samples WHERE frame_id = ?`, v.frame).Scan(&left); err != nil {
				return err
			}
			if left == 0 {
				var ff string
				var fb int64
				if err := tx.QueryRowContext(ctx, `SELECT file, bytes FROM frames WHERE id = ?`, v.frame).Scan(&ff, &fb); err == nil {
					if _, err := tx.ExecContext(ctx, `DELETE FROM frames WHERE id = ?`, v.frame); err != nil {
						return err
					}
					files = append(files, ff)
					freed += fb
				}
			}
		}
		return bump(ctx, tx)
	})
	if err != nil {
		return 0, 0, err
	}
	for _, f := range files {
		os.Remove(filepath.Join(s.dir, f))
	}
	return freed, n, nil
}
