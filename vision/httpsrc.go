package vision

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
	"sync"
	"time"

	"gocv.io/x/gocv"
)

const maxJPEG = 16 << 20

// httpReader reads an MJPEG stream (multipart/x-mixed-replace) or polls a
// single-JPEG snapshot URL. It is written in Go rather than left to
// OpenCV's FFmpeg so that a stalled camera can be cancelled.
type httpReader struct {
	url    string
	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex // guards resp: Close runs on another goroutine than Read
	resp   *http.Response
	parts  *multipart.Reader
	single bool
	buf    bytes.Buffer
	once   sync.Once
}

var httpClient = &http.Client{Transport: &http.Transport{
	ResponseHeaderTimeout: 10 * time.Second,
	IdleConnTimeout:       30 * time.Second,
}}

func openHTTP(ctx context.Context, s SourceSpec) (reader, error) {
	// The stream outlives the open call: give it its own context.
	rctx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, cancel) // the open's timeout still applies
	defer stop()
	r := &httpReader{url: s.Target, ctx: rctx, cancel: cancel}
	if err := r.connect(); err != nil {
		cancel()
		return nil, err
	}
	return r, nil
}

func (r *httpReader) connect() error {
	req, err := http.NewRequestWithContext(r.ctx, http.MethodGet, r.url, nil)
	if err != nil {
		return errPermanent{err}
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return fmt.Errorf("http camera: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return fmt.Errorf("http camera: %s", resp.Status)
	}
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch {
	case err == nil && strings.HasPrefix(mt, "multipart/"):
		if params["boundary"] == "" {
			resp.Body.Close()
			return errors.New("http camera: multipart stream without boundary")
		}
		r.parts = multipart.NewReader(bufio.NewReader(resp.Body), strings.TrimPrefix(params["boundary"], "--"))
	case err == nil && strings.HasPrefix(mt, "image/"):
		r.single = true
	default:
		resp.Body.Close()
		return fmt.Errorf("http camera: content type %q is neither MJPEG nor an image", resp.Header.Get("Content-Type"))
	}
	r.mu.Lock()
	r.resp = resp
	r.mu.Unlock()
	return nil
}

func (r *httpReader) Interruptible() bool { return true }
func (r *httpReader) Pulled() bool        { return r.single }

func (r *httpReader) Close() {
	r.once.Do(func() {
		r.cancel()
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.resp != nil {
			r.resp.Body.Close()
		}
	})
}

func (r *httpReader) body() *http.Response {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.resp
}

func (r *httpReader) Read(dst *gocv.Mat) error {
	var body io.Reader
	if r.single {
		if r.body() == nil {
			if err := r.connect(); err != nil {
				return err
			}
		}
		resp := r.body()
		body = resp.Body
		defer func() {
			resp.Body.Close()
			r.mu.Lock()
			r.resp = nil
			r.mu.Unlock()
		}()
	} else {
		p, err := r.parts.NextPart()
		if err != nil {
			return fmt.Errorf("mjpeg stream: %w", err)
		}
		body = p
	}
	r.buf.Reset()
	n, err := r.buf.ReadFrom(io.LimitReader(body, maxJPEG+1))
	if err != nil {
		return fmt.Errorf("mjpeg frame: %w", err)
	}
	if n > maxJPEG {
		return fmt.Errorf("mjpeg frame larger than %d bytes", maxJPEG)
	}
	m, err := gocv.IMDecode(r.buf.Bytes(), gocv.IMReadColor)
	if err != nil || m.Empty() {
		m.Close()
		return fmt.Errorf("mjpeg frame of %d bytes does not decode", n)
	}
	m.CopyTo(dst)
	m.Close()
	return nil
}
