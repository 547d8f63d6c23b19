// Package fetch downloads one large file over HTTP(S) into a partial file
// that survives interruptions: a later call resumes it with a Range
// request, as long as the server still has the same file (its ETag or
// Last-Modified, sent as If-Range). It bounds the size, checks the free
// space before writing, and gives up on a server that stops sending. Both
// `finetune pull` (a device's samples) and leafwatchd's model updates use
// it.
package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"
)

// Request is one download.
type Request struct {
	URL     string
	Partial string // the file being written; Partial+".validator" remembers the server's version
	Client  *http.Client
	Header  http.Header // extra headers (authorization)
	// MaxBytes refuses a larger file (0: no limit); Size, when known,
	// is the exact size expected.
	MaxBytes, Size int64
	// Reserve is free space to leave on the partial file's filesystem
	// beyond the download.
	Reserve int64
	// Stall ends an attempt when no byte arrives for this long (0: 60 s).
	Stall time.Duration
	// Progress is called as bytes arrive (at most every 250 ms) and at
	// the end of each attempt.
	Progress func(have, total int64)
	Log      *slog.Logger
}

// PermanentError ends a download without retrying: the server refused, the
// file is too large, the disk cannot hold it.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// StatusError is a response other than the file.
type StatusError struct {
	URL    string
	Code   int
	Status string
	Body   string // its start
}

func (e *StatusError) Error() string {
	if e.Body == "" {
		return fmt.Sprintf("%s: %s", e.URL, e.Status)
	}
	return fmt.Sprintf("%s: %s: %s", e.URL, e.Status, e.Body)
}

// ErrNoSpace is wrapped when the filesystem cannot hold the download.
var ErrNoSpace = errors.New("not enough free space")

// ErrTooLarge is wrapped when the file is larger than allowed.
var ErrTooLarge = errors.New("too large")

// ErrStalled is wrapped when the server stopped sending.
var ErrStalled = errors.New("the server stopped sending")

func permanent(format string, a ...any) error { return &PermanentError{fmt.Errorf(format, a...)} }

// Once makes one attempt: it resumes what Partial holds when the server
// still has the same file, else starts over. It returns nil once the whole
// file is in Partial (synced).
func Once(ctx context.Context, r Request) error {
	if r.Log == nil {
		r.Log = slog.Default()
	}
	if r.Stall <= 0 {
		r.Stall = 60 * time.Second
	}
	have, validator := r.resumable()
	if r.Size > 0 && have == r.Size {
		return nil // complete: an earlier attempt ended after the last byte
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(ctx, "GET", r.URL, nil)
	if err != nil {
		return permanent("%s: %w", r.URL, err)
	}
	for k, v := range r.Header {
		req.Header[k] = v
	}
	if have > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", have))
		req.Header.Set("If-Range", validator)
	}
	// The stall timer covers the headers too: a server that accepts the
	// connection and says nothing is as stuck as one that stops mid-file.
	stall := time.AfterFunc(r.Stall, func() { cancel(fmt.Errorf("%w for %v", ErrStalled, r.Stall)) })
	defer stall.Stop()
	resp, err := r.Client.Do(req)
	if err != nil {
		if c := context.Cause(ctx); c != nil && errors.Is(c, ErrStalled) {
			return c
		}
		return err
	}
	defer resp.Body.Close()
	flags, have, err := r.accept(resp, have)
	if err != nil {
		return err
	}
	total := have + resp.ContentLength
	f, err := os.OpenFile(r.Partial, flags, 0o640)
	if err != nil {
		return permanent("%w", err)
	}
	defer f.Close()
	if err := os.WriteFile(r.Partial+".validator", []byte(validatorOf(resp)), 0o640); err != nil {
		return classify(err)
	}
	n, err := copyWatched(f, resp.Body, stall, r.Stall, func(n int64) {
		if r.Progress != nil {
			r.Progress(have+n, total)
		}
	})
	if err == nil && n != resp.ContentLength {
		err = fmt.Errorf("the connection ended after %d of %d bytes", have+n, total)
	}
	if err != nil {
		if c := context.Cause(ctx); c != nil && errors.Is(c, ErrStalled) {
			err = c
		}
		err = fmt.Errorf("after %d of %d bytes: %w", have+n, total, err)
	}
	if serr := f.Sync(); err == nil && serr != nil {
		err = serr
	}
	if r.Progress != nil {
		r.Progress(have+n, total)
	}
	return classify(err)
}

// resumable is how much of the file the partial holds and the validator
// the server gave it (0 when it cannot be resumed).
func (r Request) resumable() (have int64, validator string) {
	v, _ := os.ReadFile(r.Partial + ".validator")
	if st, err := os.Stat(r.Partial); err == nil && len(v) > 0 {
		have = st.Size()
	}
	if r.Size > 0 && have > r.Size {
		have = 0
	}
	return have, string(v)
}

// accept checks the response before anything is written: the status (a
// resume at the right place, or the whole file again), the size against
// what is expected and allowed, and the free space. It returns how to open
// the partial file and how much of it stays.
func (r Request) accept(resp *http.Response, have int64) (flags int, kept int64, err error) {
	flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	switch resp.StatusCode {
	case http.StatusPartialContent:
		if !strings.HasPrefix(resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-", have)) {
			return 0, 0, fmt.Errorf("%s: the server resumed at the wrong place (%q)", r.URL, resp.Header.Get("Content-Range"))
		}
		r.Log.Info("resuming the download", "url", r.URL, "from_byte", have)
		flags = os.O_WRONLY | os.O_APPEND
	case http.StatusOK:
		if have > 0 {
			r.Log.Info("the file changed on the server, or it does not resume: downloading it again", "url", r.URL)
		}
		have = 0
	default:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		se := &StatusError{URL: r.URL, Code: resp.StatusCode, Status: resp.Status, Body: strings.TrimSpace(string(b))}
		if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout {
			return 0, 0, se // the server may recover
		}
		return 0, 0, &PermanentError{se}
	}
	if resp.ContentLength < 0 {
		return 0, 0, permanent("%s: the server sent no Content-Length", r.URL)
	}
	total := have + resp.ContentLength
	if r.Size > 0 && total != r.Size {
		return 0, 0, permanent("%s is %d bytes; %d expected (the server has another file)", r.URL, total, r.Size)
	}
	if r.MaxBytes > 0 && total > r.MaxBytes {
		return 0, 0, permanent("%s is %d MB: %w (limit %d MB)", r.URL, total>>20, ErrTooLarge, r.MaxBytes>>20)
	}
	if err := checkSpace(r.Partial, resp.ContentLength+r.Reserve); err != nil {
		return 0, 0, &PermanentError{err}
	}
	return flags, have, nil
}

// validatorOf is what identifies this version of the file for If-Range:
// a strong ETag, else Last-Modified (a weak ETag may not be used there).
func validatorOf(resp *http.Response) string {
	v := resp.Header.Get("ETag")
	if v == "" || strings.HasPrefix(v, "W/") {
		v = resp.Header.Get("Last-Modified")
	}
	return v
}

// copyWatched copies, pushing the stall timer back at every read.
func copyWatched(w io.Writer, r io.Reader, stall *time.Timer, d time.Duration, progress func(int64)) (int64, error) {
	buf := make([]byte, 256<<10)
	var n int64
	last := time.Now()
	for {
		k, err := r.Read(buf)
		if k > 0 {
			stall.Reset(d)
			if _, werr := w.Write(buf[:k]); werr != nil {
				return n, werr
			}
			n += int64(k)
			if time.Since(last) > 250*time.Millisecond {
				progress(n)
				last = time.Now()
			}
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// classify turns a full disk into a PermanentError wrapping ErrNoSpace.
func classify(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return &PermanentError{fmt.Errorf("%w: %v", ErrNoSpace, err)}
	}
	return err
}

// checkSpace reports whether the filesystem holding path has need bytes
// free for an unprivileged writer.
func checkSpace(path string, need int64) error {
	var st syscall.Statfs_t
	dir := path[:max(0, strings.LastIndex(path, "/"))]
	if dir == "" {
		dir = "."
	}
	if err := syscall.Statfs(dir, &st); err != nil {
		return nil // unknown: the write itself will say
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if free < need {
		return fmt.Errorf("%w in %s: %d MB free, %d MB needed", ErrNoSpace, dir, free>>20, (need+1<<20-1)>>20)
	}
	return nil
}

// Retry calls Once until it succeeds, fails permanently, ctx ends or
// retries attempts failed, waiting wait (doubling, at most 5 min) between.
func Retry(ctx context.Context, r Request, retries int, wait time.Duration) error {
	for attempt := 0; ; attempt++ {
		err := Once(ctx, r)
		if err == nil {
			return nil
		}
		var perm *PermanentError
		if errors.As(err, &perm) || ctx.Err() != nil || attempt >= retries {
			return err
		}
		if r.Log != nil {
			r.Log.Warn("download interrupted; resuming", "url", r.URL, "err", err, "attempt", attempt+1, "wait", wait)
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
		wait = min(2*wait, 5*time.Minute)
	}
}

// Discard removes a partial download and what it remembers.
func Discard(partial string) {
	os.Remove(partial)
	os.Remove(partial + ".validator")
}
