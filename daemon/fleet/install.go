package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/leafwatch/leafwatch/internal/bundle"
	"github.com/leafwatch/leafwatch/internal/fetch"
)

// update takes the offered model: verify the announcement, download,
// check, load, compare on the labelled samples, install. force is the
// install command.
func (u *Updater) update(ctx context.Context, force bool) error {
	u.mu.Lock()
	a := u.offered
	u.mu.Unlock()
	// The host's Serving may follow the engine: note what served before.
	serving := u.opt.Host.Serving()
	servingVersion := serving.Version()
	if a == nil {
		u.publish(State{State: StateIdle}, true)
		return nil
	}
	st := State{OfferedVersion: a.Version}
	if a.SHA256 == serving.SHA256() || a.Version == serving.Version() {
		st.State = StateInstalled
		u.publish(st, true)
		return nil
	}
	if why, ok := u.refused(a.SHA256); ok && !force {
		st.State, st.Reason = StateRefused, why
		u.publish(st, true)
		return nil
	}
	s, err := u.verify(a)
	if err != nil {
		return u.refuse(st, err, "", false)
	}
	st.ReleaseSummary = s.Manifest.Summary
	if !u.opt.Config.AutoInstall && !force {
		st.State = StateAvailable
		u.publish(st, true)
		return nil
	}
	if limit := int64(u.opt.Config.MaxMB) << 20; s.Manifest.Size > limit {
		return u.fail(st, fmt.Errorf("the model is %d MB, more than models.max_mb %d: too large", s.Manifest.Size>>20, u.opt.Config.MaxMB))
	}
	part := u.partPath(s.Manifest.SHA256)
	if err := u.download(ctx, a, s.Manifest, part, st); err != nil {
		return err
	}
	st.State = StateVerifying
	u.publish(st, true)
	if err := s.Manifest.CheckCheckpoint(part); err != nil {
		fetch.Discard(part)
		return u.fail(st, fmt.Errorf("the downloaded file does not match the signed manifest (discarded): %w", err))
	}
	cand, err := u.opt.Host.Load(ctx, part, s.Manifest)
	if err != nil {
		fetch.Discard(part)
		return u.refuse(st, fmt.Errorf("the model does not run here: %w", err), s.Manifest.SHA256, true)
	}
	st.State = StateEvaluating
	u.publish(st, true)
	acc, err := u.compare(ctx, serving, cand)
	if err != nil {
		cand.Close()
		return u.fail(st, err)
	}
	st.Acceptance = &acc
	u.log.Info("candidate compared on this greenhouse's labelled samples", "version", a.Version, "rule", acc.Rule)
	if !acc.Taken {
		cand.Close()
		fetch.Discard(part)
		return u.refuse(st, errors.New(acc.Rule), s.Manifest.SHA256, true)
	}
	if err := u.install(cand, part, s); err != nil {
		cand.Close()
		return u.fail(st, err)
	}
	st.State, st.Reason, st.PreviousVersion = StateInstalled, "", servingVersion
	u.log.Info("model installed", "version", a.Version, "previous", servingVersion)
	u.publish(st, true)
	return nil
}

// verify checks the announcement against its manifest and the manifest's
// signature against the trusted keys, before anything is downloaded.
func (u *Updater) verify(a *Announcement) (bundle.Signed, error) {
	s, err := a.Bundle()
	if err != nil {
		return s, fmt.Errorf("announcement of %s: %w", a.Version, err)
	}
	id, err := s.Verify(u.ring, u.opt.Config.AllowUnsigned)
	if err != nil {
		return s, fmt.Errorf("announcement of %s: %w", a.Version, err)
	}
	u.log.Info("model announced", "version", a.Version, "key", id, "url", a.URL, "size_mb", a.Size>>20)
	return s, nil
}

// compare runs both models on the device's labelled samples (the set
// choose picks) and decides by the acceptance rule.
func (u *Updater) compare(ctx context.Context, serving Model, cand Candidate) (Acceptance, error) {
	ex, err := u.opt.Host.Examples(ctx)
	if err != nil {
		return Acceptance{}, fmt.Errorf("the labelled samples cannot be read: %w", err)
	}
	set, ex := choose(ex, u.opt.Config.MinSamples, serving.Labels(), cand.Labels())
	return compare(ctx, u.opt.Config, ex, set, serving, cand)
}

// download fetches the checkpoint into part, resuming what is there.
func (u *Updater) download(ctx context.Context, a *Announcement, m bundle.Manifest, part string, st State) error {
	// Only the offered model's partial file is kept.
	old, _ := filepath.Glob(filepath.Join(u.opt.Dir, "download", "*.part"))
	for _, p := range old {
		if p != part {
			fetch.Discard(p)
		}
	}
	st.State, st.InProgress = StateDownloading, true
	pct := 0.0
	st.UpdatePercentage = &pct
	u.publish(st, true)
	last := time.Now()
	err := fetch.Retry(ctx, fetch.Request{URL: a.URL, Partial: part, Client: u.client, MaxBytes: int64(u.opt.Config.MaxMB) << 20,
		Size: m.Size, Reserve: 64 << 20, Log: u.log, Stall: u.opt.Stall,
		Progress: func(have, total int64) {
			if total <= 0 || time.Since(last) < 2*time.Second {
				return
			}
			last = time.Now()
			p := float64(int(1000*float64(have)/float64(total))) / 10
			st.UpdatePercentage = &p
			u.publish(st, false)
		}}, 3, 5*time.Second)
	if err == nil {
		u.mu.Lock()
		u.retryWait = u.opt.RetryWait
		u.mu.Unlock()
		return nil
	}
	st.InProgress, st.UpdatePercentage = false, nil
	var perm *fetch.PermanentError
	if errors.As(err, &perm) {
		if errors.Is(err, fetch.ErrTooLarge) {
			fetch.Discard(part)
		}
		return u.fail(st, fmt.Errorf("download of %s: %w", a.Version, err))
	}
	if ctx.Err() != nil {
		return ctx.Err() // shutting down; the partial file resumes next start
	}
	u.mu.Lock()
	wait := u.retryWait
	u.retryAt = time.Now().Add(wait)
	u.retryWait = min(2*wait, time.Hour)
	u.mu.Unlock()
	return u.fail(st, fmt.Errorf("download of %s (resumes in %v): %w", a.Version, wait, err))
}

// install keeps the serving model's file as the previous one, puts the
// manifest and signature beside the model path, moves the checkpoint into
// place and has the host serve it.
func (u *Updater) install(c Candidate, part string, s bundle.Signed) error {
	mp, prev := u.opt.ModelPath, u.previousPath()
	if err := keepPrevious(mp, prev); err != nil {
		return fmt.Errorf("keeping the serving model for rollback: %w", err)
	}
	u.mu.Lock()
	u.mem.Previous = u.opt.Host.Serving().Version()
	u.mu.Unlock()
	if err := bundle.WriteFileAtomic(bundle.ManifestPath(mp), s.Text, 0o644); err != nil {
		return err
	}
	if err := writeOrRemove(bundle.SignaturePath(mp), s.Sig); err != nil {
		return err
	}
	if err := moveFile(part, mp); err != nil {
		return fmt.Errorf("moving the new model into place: %w", err)
	}
	os.Remove(part + ".validator")
	if err := u.opt.Host.Install(c); err != nil {
		return err
	}
	u.mu.Lock()
	u.installedAt = time.Now()
	u.mu.Unlock()
	return nil
}

// rollback serves previous.safetensors again; the model it replaces is
// remembered as rolled back, so its announcement is not taken again by
// itself.
func (u *Updater) rollback(ctx context.Context, why string) error {
	mp, prev := u.opt.ModelPath, u.previousPath()
	if _, err := os.Stat(prev); err != nil {
		return errors.New("no previous model is kept (none was installed by an update on this device since its state was cleared)")
	}
	var m bundle.Manifest
	if s, err := bundle.ReadBeside(prev); err == nil {
		m = s.Manifest
	}
	c, err := u.opt.Host.Load(ctx, prev, m)
	if err != nil {
		return fmt.Errorf("the previous model does not load: %w", err)
	}
	cur := u.opt.Host.Serving()
	curVersion, curSHA := cur.Version(), cur.SHA256()
	for _, p := range []string{bundle.ManifestPath(prev), bundle.SignaturePath(prev)} {
		dst := strings.Replace(p, prev, mp, 1)
		if err := os.Rename(p, dst); errors.Is(err, fs.ErrNotExist) {
			os.Remove(dst) // the previous model had none: neither has it now
		}
	}
	if err := moveFile(prev, mp); err != nil {
		c.Close()
		return fmt.Errorf("moving the previous model back: %w", err)
	}
	if err := u.opt.Host.Install(c); err != nil {
		return err
	}
	u.mu.Lock()
	u.mem.Refused[curSHA] = "rolled back: " + why
	u.mem.Previous = ""
	u.installedAt = time.Time{}
	u.mu.Unlock()
	u.log.Warn("model rolled back", "now", c.Version(), "replaced", curVersion, "why", why)
	u.publish(State{State: StateRolledBack, Reason: why, OfferedVersion: curVersion}, true)
	return nil
}

func (u *Updater) refused(sha string) (string, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	why, ok := u.mem.Refused[sha]
	return why, ok
}

// refuse publishes a refusal; remember keeps the checkpoint from being
// tried again by itself.
func (u *Updater) refuse(st State, err error, sha string, remember bool) error {
	st.State, st.Reason, st.InProgress, st.UpdatePercentage = StateRefused, err.Error(), false, nil
	if remember && sha != "" {
		u.mu.Lock()
		u.mem.Refused[sha] = err.Error()
		u.mu.Unlock()
	}
	u.log.Warn("model update refused; the current model keeps serving", "version", st.OfferedVersion, "why", err)
	u.publish(st, true)
	return err
}

func (u *Updater) fail(st State, err error) error {
	st.State, st.Reason, st.InProgress, st.UpdatePercentage = StateFailed, err.Error(), false, nil
	u.log.Error("model update failed; the current model keeps serving", "version", st.OfferedVersion, "err", err)
	u.publish(st, true)
	return err
}

// publish completes a state (versions, group, time), remembers it and
// hands it to the host. Home Assistant offers an install only while
// latest_version differs from installed_version: that is so only while
// an offered model waits or is on its way.
func (u *Updater) publish(st State, durable bool) {
	serving := u.opt.Host.Serving()
	st.InstalledVersion = serving.Version()
	st.LatestVersion = st.InstalledVersion
	switch st.State {
	case StateAvailable, StateDownloading, StateVerifying, StateEvaluating:
		st.LatestVersion = st.OfferedVersion
		st.InProgress = st.State != StateAvailable
	case StateFailed:
		st.LatestVersion = st.OfferedVersion // still wanted: the install button retries
	}
	if st.LatestVersion == "" {
		st.LatestVersion = st.InstalledVersion
	}
	st.Title = "Leafwatch leaf model"
	st.Group = u.opt.Group
	st.Time = time.Now().UTC().Truncate(time.Second)
	u.mu.Lock()
	if st.PreviousVersion == "" {
		st.PreviousVersion = u.mem.Previous
	}
	u.state = st
	if durable {
		cp := st
		u.mem.Last = &cp
	}
	mem := u.mem
	u.mu.Unlock()
	if durable {
		if err := mem.save(u.memPath()); err != nil {
			u.log.Error("update history not saved", "err", err)
		}
	}
	u.opt.Host.Publish(st, durable)
}

// keepPrevious makes prev a copy of the serving checkpoint (a hard link
// when it can) with its manifest and signature.
func keepPrevious(mp, prev string) error {
	for _, p := range []string{prev, bundle.ManifestPath(prev), bundle.SignaturePath(prev)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if err := os.Link(mp, prev); err != nil {
		if err := copyFile(mp, prev); err != nil {
			return err
		}
	}
	for _, p := range []string{bundle.ManifestPath(mp), bundle.SignaturePath(mp)} {
		if _, err := os.Stat(p); err == nil {
			if err := copyFile(p, strings.Replace(p, mp, prev, 1)); err != nil {
				return err
			}
		}
	}
	return nil
}

func writeOrRemove(path string, b []byte) error {
	if len(b) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	return bundle.WriteFileAtomic(path, b, 0o644)
}

// moveFile renames src to dst, copying (then renaming within dst's
// folder) when they are on different filesystems.
func moveFile(src, dst string) error {
	err := os.Rename(src, dst)
	if !errors.Is(err, syscall.EXDEV) {
		return err
	}
	tmp := dst + ".incoming"
	if err := copyFile(src, tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Remove(src)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
