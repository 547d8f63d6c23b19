// Package samples owns the samples leafwatchd keeps for labelling: the
// keep rules and near-duplicate filter (keeper.go), the store — SQLite
// records in WAL mode with the images as files beside them (store.go,
// files.go) — labelling with undo (label.go), the disk budget
// (budget.go), and export/import (export.go, labelstudio.go). The daemon,
// its HTTP pages and the `leafwatchd samples` commands use it; another
// process may open the same store while the daemon runs.
//
// SQLite through modernc.org/sqlite: pure Go, so it cross-compiles for
// arm64 and runs under qemu like the rest of the code, and adds no C
// compile to every build (mattn/go-sqlite3 compiles sqlite3.c per target).
package samples

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" database/sql driver

	"github.com/leafwatch/leafwatch/internal/fieldset"
)

// schemaVersion changes with the tables below; a newer store is refused.
const schemaVersion = 1

const schema = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS frames (
  id TEXT PRIMARY KEY,
  camera TEXT NOT NULL,
  taken_at TEXT NOT NULL,
  width INTEGER NOT NULL,
  height INTEGER NOT NULL,
  file TEXT NOT NULL,
  bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS samples (
  id TEXT PRIMARY KEY,
  frame_id TEXT NOT NULL REFERENCES frames(id),
  camera TEXT NOT NULL,
  taken_at TEXT NOT NULL,
  day TEXT NOT NULL,
  region TEXT NOT NULL,
  box_x INTEGER NOT NULL, box_y INTEGER NOT NULL, box_w INTEGER NOT NULL, box_h INTEGER NOT NULL,
  preprocess TEXT NOT NULL,
  model_version TEXT NOT NULL,
  model_sha256 TEXT NOT NULL,
  engine TEXT NOT NULL,
  precision TEXT NOT NULL,
  threshold REAL NOT NULL,
  top TEXT NOT NULL,
  pred TEXT NOT NULL,
  prob REAL NOT NULL,
  margin REAL NOT NULL,
  rules TEXT NOT NULL,
  dhash INTEGER NOT NULL,
  file TEXT NOT NULL,
  bytes INTEGER NOT NULL,
  sha256 TEXT NOT NULL,
  label TEXT,
  labelled_by TEXT,
  labelled_at TEXT
);
CREATE INDEX IF NOT EXISTS samples_queue ON samples(label, margin);
CREATE INDEX IF NOT EXISTS samples_camera_time ON samples(camera, taken_at);
CREATE INDEX IF NOT EXISTS samples_frame ON samples(frame_id);
CREATE TABLE IF NOT EXISTS label_log (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  batch INTEGER NOT NULL,
  sample_id TEXT NOT NULL,
  old_label TEXT, old_by TEXT, old_at TEXT,
  new_label TEXT NOT NULL,
  by TEXT NOT NULL,
  at TEXT NOT NULL,
  undone INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS label_log_batch ON label_log(by, batch);
`

// timeFormat is how times are stored: UTC, fixed width, so text order is
// time order.
const timeFormat = "2006-01-02T15:04:05.000000000Z"

func fmtTime(t time.Time) string { return t.UTC().Format(timeFormat) }

func parseTime(s string) time.Time {
	t, _ := time.Parse(timeFormat, s)
	return t
}

// Store is the samples under one state directory: samples/samples.db and
// the JPEGs in samples/images and samples/frames. Safe for concurrent use;
// other processes may use the same store at once (SQLite's WAL and locks).
type Store struct {
	dir string
	db  *sql.DB

	mu sync.Mutex // serialises this process's writers (SQLite has one writer)
}

// Dir is the store's folder under a state directory.
func Dir(stateDir string) string { return filepath.Join(stateDir, "samples") }

// ErrNoStore is returned by OpenExisting when nothing was kept yet.
var ErrNoStore = errors.New("no samples kept here yet")

// Open opens (creating if needed) the store in dir and cleans up after a
// crash: records whose files are gone and files no record names.
func Open(dir string) (*Store, error) {
	for _, d := range []string{dir, filepath.Join(dir, "images"), filepath.Join(dir, "frames")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("samples: %w", err)
		}
	}
	s, err := open(dir)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// OpenExisting opens a store that must exist (the command line: a typo in
// the state directory must not create an empty store).
func OpenExisting(dir string) (*Store, error) {
	if _, err := os.Stat(filepath.Join(dir, "samples.db")); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w", dir, ErrNoStore)
		}
		return nil, fmt.Errorf("samples: %w", err)
	}
	return open(dir)
}

func open(dir string) (*Store, error) {
	path := filepath.Join(dir, "samples.db")
	// WAL: readers (the page, the command line) never block the daemon's
	// writes. synchronous=FULL: a label acknowledged is on disk, even
	// across a power cut. busy_timeout: another process writing waits.
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() +
		"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("samples: %s: %w", path, err)
	}
	// One connection: SQLite writes one at a time anyway, and a single
	// connection keeps this process's transactions from waiting on each
	// other's locks.
	db.SetMaxOpenConns(1)
	s := &Store{dir: dir, db: db}
	if err := s.migrate(); err != nil {
		db.Close()
		return nil, fmt.Errorf("samples: %s: %w", path, err)
	}
	return s, nil
}

func (s *Store) migrate() error {
	if _, err := s.db.Exec(schema); err != nil {
		return err
	}
	var v string
	err := s.db.QueryRow(`SELECT value FROM meta WHERE key='schema_version'`).Scan(&v)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		_, err = s.db.Exec(`INSERT INTO meta(key,value) VALUES('schema_version',?),('generation','0')`, fmt.Sprint(schemaVersion))
		return err
	case err != nil:
		return err
	case v != fmt.Sprint(schemaVersion):
		return fmt.Errorf("the samples database has schema version %s; this leafwatchd reads %d (upgrade leafwatchd)", v, schemaVersion)
	}
	return nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Path is the store's folder.
func (s *Store) Path() string { return s.dir }

// bump increments the store's generation in a transaction: anything that
// changes what an export holds bumps it (exports are identified by it).
func bump(ctx context.Context, tx txn) error {
	_, err := tx.ExecContext(ctx, `UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='generation'`)
	return err
}

// Generation changes whenever samples are added, removed or labelled.
func (s *Store) Generation(ctx context.Context) (int64, error) {
	var g int64
	err := s.db.QueryRowContext(ctx, `SELECT CAST(value AS INTEGER) FROM meta WHERE key='generation'`).Scan(&g)
	return g, err
}

// Sample is a stored sample.
type Sample struct {
	fieldset.Record
	File      string  // region JPEG, relative to the store
	FrameFile string  // downscaled frame JPEG, relative to the store
	Margin    float32 // top-1 minus top-2 probability
	Bytes     int64
}

// Labelled reports whether a person has labelled the sample.
func (s Sample) Labelled() bool { return s.Label != "" }

const sampleColumns = `s.id, s.frame_id, s.camera, s.taken_at, s.day, s.region, s.box_x, s.box_y, s.box_w, s.box_h,
  s.preprocess, s.model_version, s.model_sha256, s.engine, s.precision, s.threshold, s.top, s.margin, s.rules,
  s.file, s.bytes, s.sha256, COALESCE(s.label,''), COALESCE(s.labelled_by,''), COALESCE(s.labelled_at,''),
  f.file, f.width, f.height`

type scanner interface{ Scan(...any) error }

func scanSample(r scanner) (Sample, error) {
	var (
		x                           Sample
		taken, pre, top, rules, lat string
		frameW, frameH              int
	)
	err := r.Scan(&x.ID, &x.FrameID, &x.Camera, &taken, &x.Day, &x.Region, &x.Box[0], &x.Box[1], &x.Box[2], &x.Box[3],
		&pre, &x.Model.Version, &x.Model.SHA256, &x.Model.Engine, &x.Model.Precision, &x.Threshold, &top, &x.Margin, &rules,
		&x.File, &x.Bytes, &x.SHA256, &x.Label, &x.LabelledBy, &lat, &x.FrameFile, &frameW, &frameH)
	if err != nil {
		return x, err
	}
	x.Time = parseTime(taken)
	x.FrameSize = [2]int{frameW, frameH}
	if lat != "" {
		t := parseTime(lat)
		x.LabelledAt = &t
	}
	x.Rules = splitRules(rules)
	if err := unmarshal(pre, &x.Preprocess); err != nil {
		return x, fmt.Errorf("sample %s: preprocessing record: %w", x.ID, err)
	}
	if err := unmarshal(top, &x.Top); err != nil {
		return x, fmt.Errorf("sample %s: top classes: %w", x.ID, err)
	}
	return x, nil
}

// rules are stored as ",a,b," so a filter is LIKE '%,a,%'.
func joinRules(r []string) string { return "," + strings.Join(r, ",") + "," }

func splitRules(s string) []string {
	var out []string
	for _, r := range strings.Split(strings.Trim(s, ","), ",") {
		if r != "" {
			out = append(out, r)
		}
	}
	return out
}

// Get returns one sample.
func (s *Store) Get(ctx context.Context, id string) (Sample, error) {
	row := s.db.QueryRowContext(ctx, `SELECT `+sampleColumns+` FROM samples s JOIN frames f ON f.id = s.frame_id WHERE s.id = ?`, id)
	x, err := scanSample(row)
	if errors.Is(err, sql.ErrNoRows) {
		return x, fmt.Errorf("sample %q: %w", id, ErrNotFound)
	}
	return x, err
}

// ErrNotFound is returned for an unknown sample id.
var ErrNotFound = errors.New("no such sample")

// Filter selects samples.
type Filter struct {
	Camera     string
	Rule       string
	Predicted  string // the model's top class
	Label      string // a label, or "" for any
	Unlabelled bool   // only samples nobody labelled
	Labelled   bool   // only labelled samples
	Limit      int    // 0: no limit
	Offset     int
	// Queue orders lowest margin first (the labelling queue) instead of
	// by time.
	Queue bool
}

func (f Filter) where() (string, []any) {
	var conds []string
	var args []any
	if f.Camera != "" {
		conds, args = append(conds, "s.camera = ?"), append(args, f.Camera)
	}
	if f.Rule != "" {
		conds, args = append(conds, "s.rules LIKE ?"), append(args, "%,"+f.Rule+",%")
	}
	if f.Predicted != "" {
		conds, args = append(conds, "s.pred = ?"), append(args, f.Predicted)
	}
	if f.Label != "" {
		conds, args = append(conds, "s.label = ?"), append(args, f.Label)
	}
	if f.Unlabelled {
		conds = append(conds, "s.label IS NULL")
	}
	if f.Labelled {
		conds = append(conds, "s.label IS NOT NULL")
	}
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

// List returns the samples a filter selects.
func (s *Store) List(ctx context.Context, f Filter) ([]Sample, error) {
	where, args := f.where()
	q := `SELECT ` + sampleColumns + ` FROM samples s JOIN frames f ON f.id = s.frame_id` + where
	if f.Queue {
		q += ` ORDER BY s.margin ASC, s.taken_at DESC, s.id`
	} else {
		q += ` ORDER BY s.taken_at, s.id`
	}
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d OFFSET %d", f.Limit, max(f.Offset, 0))
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Sample
	for rows.Next() {
		x, err := scanSample(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, x)
	}
	return out, rows.Err()
}

// Count returns how many samples a filter selects.
func (s *Store) Count(ctx context.Context, f Filter) (int, error) {
	where, args := f.where()
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM samples s`+where, args...).Scan(&n)
	return n, err
}

// Summary is what the labelling page and the metrics show.
type Summary struct {
	Total      int            `json:"total"`
	Unlabelled int            `json:"unlabelled"`
	Labelled   map[string]int `json:"labelled"` // per label, "unsure" and "not_a_leaf" included
	Baseline   int            `json:"baseline_labelled"`
	Bytes      int64          `json:"bytes"`
	Cameras    []string       `json:"cameras"`
}

// Summarise counts the samples.
func (s *Store) Summarise(ctx context.Context) (Summary, error) {
	sum := Summary{Labelled: map[string]int{}}
	rows, err := s.db.QueryContext(ctx, `SELECT COALESCE(label,''), COUNT(*) FROM samples GROUP BY label`)
	if err != nil {
		return sum, err
	}
	for rows.Next() {
		var l string
		var n int
		if err := rows.Scan(&l, &n); err != nil {
			rows.Close()
			return sum, err
		}
		sum.Total += n
		if l == "" {
			sum.Unlabelled = n
		} else {
			sum.Labelled[l] = n
		}
	}
	rows.Close()
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM samples WHERE label IS NOT NULL AND label != ? AND rules LIKE ?`,
		fieldset.Unsure, "%,"+fieldset.RuleBaseline+",%").Scan(&sum.Baseline); err != nil {
		return sum, err
	}
	if sum.Bytes, err = s.bytesUsed(ctx, s.db); err != nil {
		return sum, err
	}
	crow, err := s.db.QueryContext(ctx, `SELECT DISTINCT camera FROM samples ORDER BY camera`)
	if err != nil {
		return sum, err
	}
	defer crow.Close()
	for crow.Next() {
		var c string
		crow.Scan(&c)
		sum.Cameras = append(sum.Cameras, c)
	}
	return sum, crow.Err()
}

type querier interface {
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

// bytesUsed is the disk the store's images take (region JPEGs and
// frames), as recorded.
func (s *Store) bytesUsed(ctx context.Context, q querier) (int64, error) {
	var a, b int64
	if err := q.QueryRowContext(ctx, `SELECT COALESCE(SUM(bytes),0) FROM samples`).Scan(&a); err != nil {
		return 0, err
	}
	if err := q.QueryRowContext(ctx, `SELECT COALESCE(SUM(bytes),0) FROM frames`).Scan(&b); err != nil {
		return 0, err
	}
	return a + b, nil
}
