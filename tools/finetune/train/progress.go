package train

import (
	"fmt"
	"io"
	"time"

	"github.com/schollz/progressbar/v3"
)

// progress shows a bar with ETA on a terminal and plain lines elsewhere
// (CI logs, systemd journals).
type progress struct {
	bar   *progressbar.ProgressBar
	w     io.Writer
	total int
	cur   int
	label string
	last  time.Time
	extra string
}

func newProgress(w io.Writer, terminal bool, total int, label string) *progress {
	p := &progress{w: w, total: total, label: label, last: time.Now()}
	if w == nil {
		p.w = io.Discard
		return p
	}
	if terminal {
		p.bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(w), progressbar.OptionSetDescription(label),
			progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(true), progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("batch"), progressbar.OptionClearOnFinish())
	}
	return p
}

func (p *progress) set(n int) {
	p.cur = n
	if p.bar != nil {
		p.bar.Set(n)
		return
	}
	if time.Since(p.last) > 10*time.Second || n == p.total {
		p.last = time.Now()
		fmt.Fprintf(p.w, "%s: batch %d/%d %s\n", p.label, n, p.total, p.extra)
	}
}

func (p *progress) note(s string) {
	p.extra = s
	if p.bar != nil {
		p.bar.Describe(p.label + " " + s)
	}
}

func (p *progress) done() {
	if p.bar != nil {
		p.bar.Finish()
		fmt.Fprintln(p.w)
	}
}
