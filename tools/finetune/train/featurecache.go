package train

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"github.com/leafwatch/leafwatch/vision"
)

// The feature cache holds the output of the frozen layers for every image
// in one file: each training image as centre crop and its mirror (the
// augmentation that survives caching), then each validation image as
// centre crop. Computing it is most of a cached run's time (PlantVillage:
// ~98k forward passes), so it lives on disk, named by a hash of everything
// it depends on — the frozen weights, the image files (path, size, mtime),
// labels, preprocessing, crops and layer — and is reused while that hash
// holds. It is written as it is computed (memory stays at a few batches)
// to NAME.partial, which an interrupted run continues; it is renamed to
// NAME.bin when complete.
type featureCache struct {
	f            *os.File
	path         string
	fl           int // floats per image
	nTrain, nVal int
	trainLab     []int
	valLab       []int
}

// afterCacheBatch, when set (tests), is called after each cached batch.
var afterCacheBatch func(batches int)

const (
	featureMagic   = "LWFEAT01"
	featureHdrSize = 64
)

type featureHeader struct {
	Magic        [8]byte
	Key          [32]byte
	FL           uint32
	NTrain, NVal uint32
	_            [12]byte
}

func (fc *featureCache) recBytes() int64 { return int64(fc.fl) * 4 }
func (fc *featureCache) size() int64 {
	return featureHdrSize + int64(2*fc.nTrain+fc.nVal)*fc.recBytes()
}

// featureKey hashes what the cached features depend on.
func (t *Trainer) featureKey() ([32]byte, error) {
	h := sha256.New()
	fmt.Fprintf(h, "leafwatch feature cache 1 prepare %d %s/%s variant %s from %d floats %d prep %+v crops train:centre+mirror val:centre\n",
		vision.PrepareVersion, runtime.GOARCH, "float32", t.m.Spec.Variant, t.from, t.m.ActLen(t.from), t.aug.Prep)
	for _, l := range t.m.Spec.Layers[:t.from] {
		if l.Name == "" {
			continue
		}
		for _, suffix := range []string{".weight", ".bias"} {
			p := t.m.Params[l.Name+suffix]
			if p == nil {
				continue
			}
			fmt.Fprintf(h, "%s %v\n", l.Name+suffix, p.Shape)
			h.Write(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(p.Data))), len(p.Data)*4))
		}
	}
	for _, part := range [][]Sample{t.data.Train, t.data.Val} {
		fmt.Fprintf(h, "part %d\n", len(part))
		for _, s := range part {
			st, err := os.Stat(s.Path)
			if err != nil {
				return [32]byte{}, fmt.Errorf("feature cache: %w", err)
			}
			fmt.Fprintf(h, "%q %d %d %d\n", s.Path, s.Label, st.Size(), st.ModTime().UnixNano())
		}
	}
	var k [32]byte
	copy(k[:], h.Sum(nil))
	return k, nil
}

// openFeatureCache reuses a valid cache or computes (or completes) one.
func (t *Trainer) openFeatureCache(ctx context.Context) (*featureCache, error) {
	key, err := t.featureKey()
	if err != nil {
		return nil, err
	}
	dir := t.cfg.FeatureCacheDir
	own := dir == ""
	if own {
		dir = filepath.Join(t.cfg.Out, "features")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("feature cache folder: %w", err)
	}
	name := "features-" + hex.EncodeToString(key[:8])
	fc := &featureCache{fl: t.m.ActLen(t.from), nTrain: len(t.data.Train), nVal: len(t.data.Val)}
	for _, s := range t.data.Train {
		fc.trainLab = append(fc.trainLab, s.Label)
	}
	for _, s := range t.data.Val {
		fc.valLab = append(fc.valLab, s.Label)
	}
	hdr := featureHeader{Key: key, FL: uint32(fc.fl), NTrain: uint32(fc.nTrain), NVal: uint32(fc.nVal)}
	copy(hdr.Magic[:], featureMagic)

	final := filepath.Join(dir, name+".bin")
	if f, err := os.Open(final); err == nil {
		if err := fc.adopt(f, hdr, true); err == nil {
			fc.path = final
			t.log.Info("reusing cached features", "file", final, "images", fc.nTrain+fc.nVal, "MB", fc.size()>>20)
			return fc, nil
		} else {
			f.Close()
			t.log.Warn("cached features unusable; computing them again", "file", final, "err", err)
		}
	}
	if own {
		removeStaleCaches(dir, name, t)
	}
	partial := filepath.Join(dir, name+".partial")
	if err := t.computeFeatures(ctx, fc, hdr, partial); err != nil {
		return nil, err
	}
	if err := os.Rename(partial, final); err != nil {
		return nil, fmt.Errorf("feature cache: %w", err)
	}
	f, err := os.Open(final)
	if err != nil {
		return nil, fmt.Errorf("feature cache: %w", err)
	}
	fc.f, fc.path = f, final
	return fc, nil
}

// adopt takes f as the cache if its header is hdr and, when complete is
// set, its size is the full size.
func (fc *featureCache) adopt(f *os.File, want featureHeader, complete bool) error {
	var got featureHeader
	if err := binary.Read(io.NewSectionReader(f, 0, featureHdrSize), binary.LittleEndian, &got); err != nil {
		return fmt.Errorf("header: %w", err)
	}
	if got != want {
		return errors.New("it was made for other weights, images or settings")
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if complete && st.Size() != fc.size() {
		return fmt.Errorf("%d bytes, want %d: cut short", st.Size(), fc.size())
	}
	fc.f = f
	return nil
}

func removeStaleCaches(dir, keep string, t *Trainer) {
	for _, pat := range []string{"features-*.bin", "features-*.partial"} {
		old, _ := filepath.Glob(filepath.Join(dir, pat))
		for _, p := range old {
			if base := filepath.Base(p); base == keep+".bin" || base == keep+".partial" {
				continue
			}
			t.log.Info("removing cached features made for other weights, images or settings", "file", p)
			os.Remove(p)
		}
	}
}

// computeFeatures writes the features into partial, continuing what an
// earlier, interrupted run left there.
func (t *Trainer) computeFeatures(ctx context.Context, fc *featureCache, hdr featureHeader, partial string) error {
	f, doneTrain, doneVal, err := openPartialCache(fc, hdr, partial)
	if err != nil {
		return err
	}
	defer f.Close()
	todo := 2*(fc.nTrain-doneTrain) + fc.nVal - doneVal
	t.log.Info("computing the frozen layers' features once; they are kept for later runs and resumes",
		"file", partial, "layer", t.from, "forward_passes", todo, "already_done", 2*doneTrain+doneVal, "MB", fc.size()>>20)
	bs := t.cfg.BatchSize
	cw := &cacheWriter{f: f, w: bufio.NewWriterSize(f, 1<<20), fc: fc, partial: partial,
		prog: newProgress(t.cfg.Progress, t.cfg.Terminal, (fc.nTrain-doneTrain+bs-1)/bs+(fc.nVal-doneVal+bs-1)/bs, "caching features")}
	start := time.Now()
	if err := t.cacheTrain(ctx, cw, doneTrain); err != nil {
		return cw.stop(err)
	}
	if err := t.cacheVal(ctx, cw, doneVal); err != nil {
		return cw.stop(err)
	}
	if ctx.Err() != nil {
		return cw.stop(nil)
	}
	cw.prog.done()
	if err := cw.w.Flush(); err != nil {
		return fmt.Errorf("feature cache: %w", err)
	}
	if got, err := fileSize(f); err != nil || got != fc.size() {
		return fmt.Errorf("feature cache: wrote %d bytes, want %d (%v)", got, fc.size(), err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("feature cache: %w", err)
	}
	t.log.Info("features cached", "forward_passes", todo, "seconds", time.Since(start).Round(time.Millisecond).Seconds())
	return nil
}

// openPartialCache opens (or starts) the partial cache file and says how
// many training images (both crops) and validation images it holds: a
// file of the same header is continued, anything else started over. The
// file is positioned after the records kept, with room checked for the
// rest.
func openPartialCache(fc *featureCache, hdr featureHeader, partial string) (f *os.File, doneTrain, doneVal int, err error) {
	f, err = os.OpenFile(partial, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("feature cache: %w", err)
	}
	fail := func(err error) (*os.File, int, int, error) {
		f.Close()
		return nil, 0, 0, err
	}
	if err := fc.adopt(f, hdr, false); err == nil {
		size, err := fileSize(f)
		if err != nil {
			return fail(err)
		}
		recs := int((size - featureHdrSize) / fc.recBytes())
		doneTrain = min(recs/2, fc.nTrain)
		if doneTrain == fc.nTrain {
			doneVal = min(recs-2*fc.nTrain, fc.nVal)
		}
	} else {
		if err := f.Truncate(0); err != nil {
			return fail(fmt.Errorf("feature cache: %w", err))
		}
		if _, err := f.WriteAt(headerBytes(hdr), 0); err != nil {
			return fail(fmt.Errorf("feature cache: %w", err))
		}
	}
	end := featureHdrSize + int64(2*doneTrain+doneVal)*fc.recBytes()
	if err := f.Truncate(end); err != nil {
		return fail(fmt.Errorf("feature cache: %w", err))
	}
	if _, err := f.Seek(end, io.SeekStart); err != nil {
		return fail(err)
	}
	if err := checkFreeSpace(filepath.Dir(partial), fc.size()-end); err != nil {
		return fail(err)
	}
	return f, doneTrain, doneVal, nil
}

// cacheWriter appends feature records to the partial cache file.
type cacheWriter struct {
	f       *os.File
	w       *bufio.Writer
	fc      *featureCache
	partial string
	prog    *progress
	batches int
}

// stop ends caching early: what was computed is flushed (and kept for the
// next run); err is returned as it is, and a nil err (the context ended)
// becomes an Interrupted saying how far caching got.
func (cw *cacheWriter) stop(err error) error {
	cw.prog.done()
	if ferr := cw.w.Flush(); ferr != nil {
		return fmt.Errorf("feature cache: %w", ferr)
	}
	if err != nil {
		return err
	}
	size, serr := fileSize(cw.f)
	if serr != nil {
		return fmt.Errorf("feature cache: %w", serr)
	}
	recs := int((size - featureHdrSize) / cw.fc.recBytes())
	return &Interrupted{Detail: fmt.Sprintf("while caching features (%d of %d forward passes done, kept in %s)", recs, 2*cw.fc.nTrain+cw.fc.nVal, cw.partial)}
}

// batchDone counts a batch written.
func (cw *cacheWriter) batchDone() {
	cw.batches++
	cw.prog.set(cw.batches)
}

// cacheTrain writes the training images' features from doneTrain on: the
// centre crop and its mirror, one record each. It returns nil when the
// context ends (the caller says so).
func (t *Trainer) cacheTrain(ctx context.Context, cw *cacheWriter, doneTrain int) error {
	fl, bs := cw.fc.fl, t.cfg.BatchSize
	order := identity(cw.fc.nTrain)
	a := t.aug
	a.Random, a.Mirror = false, false
	am := a
	am.Mirror = true
	bctx, cancel := context.WithCancel(ctx)
	centre := batches(bctx, t.data.Train, order, doneTrain, bs, t.cfg.Workers, a, 0, 0)
	mirror := batches(bctx, t.data.Train, order, doneTrain, bs, t.cfg.Workers, am, 0, 0)
	defer func() {
		for range mirror { // its decoders end once cancelled
		}
	}()
	defer cancel() // first: ends the decoders when an error returns early
	var kept []float32
	for b := range centre {
		bm, ok := <-mirror
		if !ok || ctx.Err() != nil {
			return nil
		}
		if len(b.bad) > 0 || len(bm.bad) > 0 {
			return fmt.Errorf("feature cache: %s — fix or remove the file and run again", append(b.bad, bm.bad...)[0])
		}
		fcen, err := t.features(b.x, len(b.labels))
		if err != nil {
			return err
		}
		kept = append(kept[:0], fcen[:len(b.labels)*fl]...) // the engine reuses its output buffer
		fmir, err := t.features(bm.x, len(bm.labels))
		if err != nil {
			return err
		}
		for i := range b.labels {
			writeFloats(cw.w, kept[i*fl:(i+1)*fl])
			writeFloats(cw.w, fmir[i*fl:(i+1)*fl])
		}
		cw.batchDone()
		if afterCacheBatch != nil {
			afterCacheBatch(cw.batches)
		}
	}
	return nil
}

// cacheVal writes the validation images' features (centre crop) from
// doneVal on; nothing once the context has ended.
func (t *Trainer) cacheVal(ctx context.Context, cw *cacheWriter, doneVal int) error {
	if ctx.Err() != nil {
		return nil
	}
	a := t.aug
	a.Random, a.Mirror = false, false
	bctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for b := range batches(bctx, t.data.Val, identity(cw.fc.nVal), doneVal, t.cfg.BatchSize, t.cfg.Workers, a, 0, 0) {
		if len(b.bad) > 0 {
			return fmt.Errorf("feature cache: %s — fix or remove the file and run again", b.bad[0])
		}
		fv, err := t.features(b.x, len(b.labels))
		if err != nil {
			return err
		}
		writeFloats(cw.w, fv[:len(b.labels)*cw.fc.fl])
		cw.batchDone()
	}
	return nil
}

// features runs the frozen layers on a batch.
func (t *Trainer) features(x []float32, n int) ([]float32, error) {
	if t.dev != nil {
		return t.dev.Features(x, n, t.from)
	}
	return t.sess.Features(x, n, t.from), nil
}

func identity(n int) []int {
	o := make([]int, n)
	for i := range o {
		o[i] = i
	}
	return o
}

func headerBytes(h featureHeader) []byte {
	b := make([]byte, 0, featureHdrSize)
	b, _ = binary.Append(b, binary.LittleEndian, h)
	return b
}

// writeFloats writes raw float32s; the cache is local to the machine
// (GOARCH is part of its key), so native byte order is fine.
func writeFloats(w *bufio.Writer, v []float32) {
	w.Write(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(v))), len(v)*4))
}

// fileSize is an open file's size.
func fileSize(f *os.File) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// checkFreeSpace refuses to start a cache the disk cannot hold.
func checkFreeSpace(dir string, need int64) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return nil // unknown: let the writes report it
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if free < need+(64<<20) {
		return fmt.Errorf("feature cache needs %d MB in %s but only %d MB are free: free space, or point --feature-cache at a larger disk", need>>20, dir, free>>20)
	}
	return nil
}

// readRecord reads record i into dst.
func (fc *featureCache) readRecord(i int, dst []float32) error {
	b := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(dst))), len(dst)*4)
	if _, err := fc.f.ReadAt(b, featureHdrSize+int64(i)*fc.recBytes()); err != nil {
		return fmt.Errorf("feature cache %s: %w", fc.path, err)
	}
	return nil
}

// trainBatches yields batches in the epoch's order, skipping the batches
// already done; each image's mirror choice is seeded by its position.
func (fc *featureCache) trainBatches(order []int, skip, bs int, seed uint64, epoch int) func() (*batch, bool) {
	pos := skip * bs
	return func() (*batch, bool) {
		if pos >= len(order) {
			return nil, false
		}
		end := min(pos+bs, len(order))
		b := &batch{x: make([]float32, (end-pos)*fc.fl)}
		for i := pos; i < end; i++ {
			rng := rand.New(rand.NewPCG(seed^0xa11a, uint64(epoch)<<32|uint64(i)))
			j := order[i]*2 + rng.IntN(2)
			if err := fc.readRecord(j, b.x[(i-pos)*fc.fl:(i-pos+1)*fc.fl]); err != nil {
				b.err = err
				break
			}
			b.labels = append(b.labels, fc.trainLab[order[i]])
		}
		pos = end
		return b, true
	}
}

// valBatches yields the validation features in order.
func (fc *featureCache) valBatches(bs int) func() (*batch, bool) {
	pos := 0
	return func() (*batch, bool) {
		if pos >= fc.nVal {
			return nil, false
		}
		end := min(pos+bs, fc.nVal)
		b := &batch{x: make([]float32, (end-pos)*fc.fl), labels: fc.valLab[pos:end]}
		bb := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(b.x))), len(b.x)*4)
		if _, err := fc.f.ReadAt(bb, featureHdrSize+int64(2*fc.nTrain+pos)*fc.recBytes()); err != nil {
			b.err = fmt.Errorf("feature cache %s: %w", fc.path, err)
		}
		pos = end
		return b, true
	}
}

func (fc *featureCache) close() {
	if fc != nil && fc.f != nil {
		fc.f.Close()
	}
}
