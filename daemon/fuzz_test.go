package daemon

import (
	"strings"
	"testing"

	"github.com/leafwatch/leafwatch/systemd"
)

// FuzzParseConfig: no config file panics the parser, and every refusal is a
// ConfigError that says what is wrong.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(systemd.ExampleConfig))
	f.Add([]byte("cameras: [{name: a, source: /tmp}]\n"))
	f.Add([]byte("cameras:\n  - name: a\n    source: rtsp://u:p@h/x?open_timeout=5s\n    tiling: {rows: 9}\n"))
	f.Add([]byte("broker: tcp://u:pw@host:1883\nhttp_tls: {cert_file: x}\n"))
	f.Add([]byte("&a [*a, *a]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, err := ParseConfig("fuzz.yaml", b)
		if err == nil {
			return
		}
		ce, ok := err.(*ConfigError)
		if !ok || len(ce.Problems) == 0 {
			t.Fatalf("a refusal that is not a ConfigError with problems: %v", err)
		}
		for _, p := range ce.Problems {
			if strings.TrimSpace(p) == "" {
				t.Fatal("an empty problem")
			}
		}
	})
}
