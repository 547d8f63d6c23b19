package fleet

import (
	"testing"
	"time"
)

// FuzzParseAnnouncement: whatever arrives on the announcement topic is
// refused with an error or parsed into a bundle check; it never panics.
func FuzzParseAnnouncement(f *testing.F) {
	f.Add([]byte(""))
	f.Add([]byte(`{"version":"abc","url":"https://x/m","sha256":"00","size":1,"manifest":"{}","signature":"","published":"2026-12-01T00:00:00Z"}`))
	f.Add(Announcement{URL: "http://h/m", Manifest: `{"format":"leafwatch-model"}`, Published: time.Unix(0, 0)}.Marshal())
	f.Add([]byte(`{"url":"file:///etc/passwd","manifest":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, ok, err := ParseAnnouncement(b)
		if err != nil || !ok {
			return
		}
		a.Bundle() // may refuse; must not panic
	})
}

func TestChoose(t *testing.T) {
	ex := func(label string, base bool) Example { return Example{Label: label, Baseline: base} }
	all := []Example{ex(blight, true), ex(blight, false), ex("Rose___rust", true), ex(healthy, true)}
	cases := []struct {
		min      int
		set      string
		expected int
	}{
		{min: 2, set: "baseline", expected: 2}, // the rose label is known to neither model
		{min: 3, set: "labelled", expected: 3},
	}
	for _, c := range cases {
		set, out := choose(all, c.min, labels, labels)
		if set != c.set || len(out) != c.expected {
			t.Errorf("min %d: %s with %d, want %s with %d", c.min, set, len(out), c.set, c.expected)
		}
	}
}
