package vision

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"gocv.io/x/gocv"

	"github.com/leafwatch/leafwatch/internal/redact"
)

// State is a source's connection state.
type State string

const (
	StateConnecting   State = "connecting"
	StateConnected    State = "connected"
	StateReconnecting State = "reconnecting"
	StateEnded        State = "ended"  // a file or folder without loop reached its end
	StateFailed       State = "failed" // cannot work as configured (e.g. missing file); retried slowly
	StateStopped      State = "stopped"
)

// Status is a snapshot of a source's health for /readyz and metrics.
type Status struct {
	URI        string `json:"uri"` // passwords redacted
	State      State  `json:"state"`
	LastError  string `json:"last_error,omitempty"`
	Reconnects uint64 `json:"reconnects"` // connections that delivered frames again after a loss
	// ConnectFailures counts opens that failed or connections lost before
	// their first frame.
	ConnectFailures uint64    `json:"connect_failures"`
	Frames          uint64    `json:"frames"`
	Skipped         uint64    `json:"skipped"` // unreadable images in a folder
	LastFrame       time.Time `json:"last_frame"`
	FPS             float64   `json:"fps"`
	// Abandoned counts opens or reads that never returned and were left
	// behind (OpenCV cannot cancel them); each holds a thread.
	Abandoned uint64 `json:"abandoned"`
}

// errEnd is returned by a reader at the end of a non-looping file or folder.
var errEnd = errors.New("end of input")

// errPermanent marks errors that retrying will not fix soon (missing file).
type errPermanent struct{ error }

func (e errPermanent) Unwrap() error { return e.error }

// reader is one open connection to a camera. Read blocks until a frame is
// in dst or an error occurs.
type reader interface {
	Read(dst *gocv.Mat) error
	Close()
	// Interruptible readers can be closed while a Read is blocked.
	Interruptible() bool
	// Pulled readers produce a frame when asked (files, folders, snapshot
	// URLs): fps paces their reads. Streams (cameras, MJPEG, RTSP) deliver
	// at their own rate: fps then drops frames, so the newest is kept.
	Pulled() bool
}

// Camera is a frame source that keeps itself connected. Its capture
// goroutine always overwrites one "latest" slot, so a consumer sampling
// every few seconds gets the newest frame and capture never waits for it.
type Camera struct {
	spec SourceSpec
	log  *slog.Logger
	open func(ctx context.Context) (reader, error)

	// Backoff bounds for reconnects.
	MinBackoff, MaxBackoff time.Duration

	base     time.Time // monotonic origin for stall detection
	mu       sync.Mutex
	latest   gocv.Mat
	seq      uint64
	at       time.Time
	status   Status
	fpsEWMA  float64
	frameCh  chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	readers  sync.WaitGroup // reading goroutines, which own their Mats
	started  atomic.Bool    // Run was called (Close waits for it only then)
}

// NewCamera prepares a source; Run starts capturing.
func NewCamera(spec SourceSpec, log *slog.Logger) (*Camera, error) {
	if log == nil {
		log = slog.Default()
	}
	c := &Camera{spec: spec, log: log.With("source", spec.Display), MinBackoff: 500 * time.Millisecond, MaxBackoff: 30 * time.Second,
		latest: gocv.NewMat(), frameCh: make(chan struct{}, 1), done: make(chan struct{}), base: time.Now()}
	c.status = Status{URI: spec.Display, State: StateConnecting}
	switch spec.Kind {
	case KindFolder:
		c.open = func(ctx context.Context) (reader, error) { return openFolder(spec, c.countSkip, c.log) }
	case KindHTTP:
		c.open = func(ctx context.Context) (reader, error) { return openHTTP(ctx, spec) }
	default:
		c.open = func(ctx context.Context) (reader, error) { return openCapture(ctx, spec) }
	}
	return c, nil
}

// Open parses a URI and returns a camera for it.
func Open(uri string, log *slog.Logger) (*Camera, error) {
	spec, err := ParseSource(uri)
	if err != nil {
		return nil, err
	}
	return NewCamera(spec, log)
}

// Spec returns the parsed source.
func (c *Camera) Spec() SourceSpec { return c.spec }

func (c *Camera) countSkip() {
	c.mu.Lock()
	c.status.Skipped++
	c.mu.Unlock()
}

func (c *Camera) setState(s State, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.status.State = s
	if err != nil {
		c.status.LastError = redact.Passwords(err.Error())
	}
}

// mono is the time since the camera was made, on the monotonic clock: a
// wall-clock step (NTP on a board that booted with a wrong clock) must not
// look like a stall.
func (c *Camera) mono() int64 { return int64(time.Since(c.base)) }

// Status returns the current health.
func (c *Camera) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.status
	s.FPS = c.fpsEWMA
	return s
}

// Frames is signalled (without blocking) after each new frame.
func (c *Camera) Frames() <-chan struct{} { return c.frameCh }

// Latest copies the newest frame into dst. It returns the frame's sequence
// number (0 when there has been no frame yet) and capture time.
func (c *Camera) Latest(dst *gocv.Mat) (uint64, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seq == 0 || c.latest.Empty() {
		return 0, time.Time{}
	}
	c.latest.CopyTo(dst)
	return c.seq, c.at
}

func (c *Camera) publish(m *gocv.Mat, now time.Time, first, reconnect bool) {
	c.mu.Lock()
	m.CopyTo(&c.latest)
	c.seq++
	if first {
		// Connected means delivering: not before the first frame.
		c.status.State = StateConnected
		if reconnect {
			c.status.Reconnects++
		}
	}
	if !c.at.IsZero() {
		if dt := now.Sub(c.at).Seconds(); dt > 0 {
			inst := 1 / dt
			if c.fpsEWMA == 0 {
				c.fpsEWMA = inst
			} else {
				c.fpsEWMA = 0.9*c.fpsEWMA + 0.1*inst
			}
		}
	}
	c.at = now
	c.status.Frames++
	c.status.LastFrame = now
	c.mu.Unlock()
	if first {
		c.log.Info("camera delivering frames")
	}
	select {
	case c.frameCh <- struct{}{}:
	default:
	}
}

// Run captures until ctx ends, reconnecting as needed. It returns when the
// source has ended (non-looping file/folder) or ctx is done.
func (c *Camera) Run(ctx context.Context) {
	if !c.started.CompareAndSwap(false, true) {
		return // Run twice, or after Close
	}
	defer close(c.done)
	backoff := c.MinBackoff
	delivered := false // some connection has delivered frames before
	for ctx.Err() == nil {
		var err error
		state := StateReconnecting
		if !delivered {
			state = StateConnecting
		}
		if r, oerr := c.openBounded(ctx); oerr != nil {
			err = oerr
			var perm errPermanent
			if errors.As(err, &perm) {
				state = StateFailed
			}
			c.countFailure()
			c.log.Warn("camera open failed", "err", redact.Passwords(err.Error()), "retry_in", backoff)
		} else {
			c.log.Info("camera opened; waiting for the first frame")
			before := c.Status().Frames
			err = c.readLoop(ctx, r, delivered)
			if ctx.Err() != nil {
				break
			}
			if errors.Is(err, errEnd) {
				c.setState(StateEnded, nil)
				c.log.Info("source ended")
				return
			}
			if c.Status().Frames > before {
				delivered = true
				state = StateReconnecting
				backoff = c.MinBackoff // this connection worked: start over gently
			} else {
				c.countFailure()
			}
			c.log.Warn("camera lost; reconnecting", "err", redact.Passwords(err.Error()), "retry_in", backoff)
		}
		c.setState(state, err)
		if !sleepCtx(ctx, jitter(backoff)) {
			break
		}
		backoff = min(backoff*2, c.MaxBackoff)
	}
	c.setState(StateStopped, nil)
}

func (c *Camera) countFailure() {
	c.mu.Lock()
	c.status.ConnectFailures++
	c.mu.Unlock()
}

// Close waits for Run to finish (after its ctx is cancelled) and frees the
// frame slot.
func (c *Camera) Close() {
	c.stopOnce.Do(func() {
		if c.started.Swap(true) {
			<-c.done // Run was started: wait for it (its ctx must be done)
		}
		// Wait for readers to release their Mats, but not for one stuck in
		// an OpenCV call that never returns.
		idle := make(chan struct{})
		go func() { c.readers.Wait(); close(idle) }()
		select {
		case <-idle:
		case <-time.After(3 * time.Second):
			c.log.Warn("a capture read is still blocked; leaving it behind")
		}
		c.mu.Lock()
		c.latest.Close()
		c.mu.Unlock()
	})
}

func jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(rand.Int64N(int64(d)/2+1))
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// openBounded opens with the spec's timeout. OpenCV cannot cancel an open,
// so one that overruns is abandoned and closed if it ever returns.
func (c *Camera) openBounded(ctx context.Context) (reader, error) {
	type res struct {
		r   reader
		err error
	}
	ch := make(chan res, 1)
	octx, cancel := context.WithTimeout(ctx, c.spec.OpenTimeout)
	defer cancel()
	go func() {
		r, err := c.open(octx)
		ch <- res{r, err}
	}()
	select {
	case x := <-ch:
		return x.r, x.err
	case <-octx.Done():
		c.mu.Lock()
		c.status.Abandoned++
		c.mu.Unlock()
		go func() {
			if x := <-ch; x.r != nil {
				x.r.Close()
			}
		}()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("open did not finish within %v", c.spec.OpenTimeout)
	}
}

// readLoop reads frames on its own goroutine and watches for stalls.
// reconnect says an earlier connection delivered (for the counter).
func (c *Camera) readLoop(ctx context.Context, r reader, reconnect bool) error {
	var stop atomic.Bool
	errCh := make(chan error, 1)
	// lastFrame is when the reader last made progress, on the monotonic
	// clock; while a pulled source sleeps between frames it is set to the
	// end of the sleep, so pacing never counts as a stall.
	var lastFrame atomic.Int64
	lastFrame.Store(c.mono())
	c.readers.Add(1)
	go func() {
		defer c.readers.Done()
		c.readFrames(r, reconnect, &stop, &lastFrame, errCh)
	}()
	tick := time.NewTicker(min(c.spec.ReadTimeout/4, 250*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			stop.Store(true)
			if r.Interruptible() {
				r.Close()
			}
			return ctx.Err()
		case err := <-errCh:
			stop.Store(true)
			return err
		case <-tick.C:
			if since := time.Duration(c.mono() - lastFrame.Load()); since > c.spec.ReadTimeout {
				stop.Store(true)
				if r.Interruptible() {
					r.Close()
				} else {
					c.mu.Lock()
					c.status.Abandoned++
					c.mu.Unlock()
				}
				return fmt.Errorf("no frame for %v (read_timeout)", since.Round(time.Millisecond))
			}
		}
	}
}

// readFrames reads until stop is set or a read fails (the error goes to
// errCh), publishing frames at the source's pace: a stream faster than
// fps keeps only the newest, a pulled source (files, folders) sleeps
// between frames. It is the only goroutine that touches r after open, and
// closes it, so a read that returns late never races with Close.
func (c *Camera) readFrames(r reader, reconnect bool, stop *atomic.Bool, lastFrame *atomic.Int64, errCh chan<- error) {
	interval := c.interval(r)
	buf := gocv.NewMat()
	defer buf.Close()
	oriented := gocv.NewMat()
	defer oriented.Close()
	first := true
	var next, lastPub int64 // monotonic
	for !stop.Load() {
		if err := r.Read(&buf); err != nil {
			errCh <- err
			break
		}
		now := c.mono()
		lastFrame.Store(now)
		if interval > 0 && !r.Pulled() && !first && now-lastPub < int64(interval) {
			continue // a stream faster than fps: keep reading, keep the newest
		}
		out := &buf
		if c.spec.orientInGo() {
			orient(buf, &oriented, c.spec)
			out = &oriented
		}
		if !stop.Load() {
			c.publish(out, time.Now(), first, reconnect)
			first, lastPub = false, now
		}
		if interval > 0 && r.Pulled() {
			if next == 0 {
				next = now
			}
			next += int64(interval)
			if d := time.Duration(next - c.mono()); d > 0 {
				lastFrame.Store(next)
				time.Sleep(d)
			} else {
				next = c.mono()
			}
		}
	}
	r.Close()
}

// interval is the time between frames that fps asks for; video files
// without fps play at their own frame rate.
func (c *Camera) interval(r reader) time.Duration {
	fps := c.spec.FPS
	if fps == 0 {
		if nf, ok := r.(interface{ nativeFPS() float64 }); ok && nf.nativeFPS() <= 240 {
			fps = nf.nativeFPS()
		}
	}
	if fps > 0 {
		return time.Duration(float64(time.Second) / fps)
	}
	return 0
}

func orient(src gocv.Mat, dst *gocv.Mat, s SourceSpec) {
	cur := src
	tmp := gocv.NewMat()
	defer tmp.Close()
	switch s.Rotate {
	case 90:
		gocv.Rotate(cur, &tmp, gocv.Rotate90Clockwise)
		cur = tmp
	case 180:
		gocv.Rotate(cur, &tmp, gocv.Rotate180Clockwise)
		cur = tmp
	case 270:
		gocv.Rotate(cur, &tmp, gocv.Rotate90CounterClockwise)
		cur = tmp
	}
	switch s.Flip {
	case "horizontal":
		gocv.Flip(cur, dst, 1)
	case "vertical":
		gocv.Flip(cur, dst, 0)
	case "both":
		gocv.Flip(cur, dst, -1)
	default:
		cur.CopyTo(dst)
	}
}
