package main

import (
	"bytes"
	"strings"
	"testing"
)

// A govulncheck stream with one vulnerability the code calls, and one it
// only imports (no function in the trace's first frame).
const stream = `{"config":{"protocol_version":"v1.0.0","scanner_version":"v1.9.0","go_version":"go1.26.8"}}
{"osv":{"id":"GO-2026-0001","summary":"called one"}}
{"osv":{"id":"GO-2026-0002","summary":"imported one"}}
{"finding":{"osv":"GO-2026-0001","fixed_version":"v1.26.9","trace":[{"module":"stdlib","version":"v1.26.8","package":"net/http","function":"ReadFrom","receiver":"*response"},{"module":"github.com/leafwatch/leafwatch","package":"github.com/leafwatch/leafwatch/vision","function":"Run","position":{"filename":"vision/source.go","line":226}}]}}
{"finding":{"osv":"GO-2026-0002","fixed_version":"v0.39.0","trace":[{"module":"golang.org/x/image","version":"v0.30.0","package":"golang.org/x/image/tiff"}]}}
`

func TestGate(t *testing.T) {
	cases := []struct {
		name     string
		in       string
		accepted map[string]string
		code     int
		want     []string
	}{
		{"reachable fails", stream, nil, 1, []string{"REACHABLE GO-2026-0001 stdlib@v1.26.8, fixed in v1.26.9: called one", "vision/source.go:226", "net/http.response.ReadFrom", "1 reachable vulnerabilities, 0 accepted, 1 open"}},
		{"accepted passes", stream, map[string]string{"GO-2026-0001": "test only"}, 0, []string{"accepted  GO-2026-0001", "reason: test only", "1 accepted, 0 open"}},
		{"stale acceptance is named", stream, map[string]string{"GO-2026-0001": "x", "GO-2025-9999": "old"}, 0, []string{"GO-2025-9999 no longer matches"}},
		{"imported only passes", strings.Join(strings.Split(stream, "\n")[:3], "\n") + "\n" + strings.Split(stream, "\n")[4], nil, 0, []string{"0 reachable"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			found, goVersion, err := scan(strings.NewReader(c.in))
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if code := report(&out, found, c.accepted, goVersion); code != c.code {
				t.Errorf("exit %d, want %d\n%s", code, c.code, out.String())
			}
			for _, w := range c.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
	if _, _, err := scan(strings.NewReader("")); err == nil {
		t.Error("empty input (govulncheck did not run) passed")
	}
}
