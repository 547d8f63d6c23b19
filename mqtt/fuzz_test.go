package mqtt

import "testing"

// FuzzParseCommand: no payload panics the command parser; an accepted
// command has a known name and a valid camera name (or none).
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"", "{}", `{"id":"r1"}`, `{"camera":"bench1","id":"x"}`, `{"camera":"../x"}`, "null", "[1]", `{"id":1}`, `{"a":1}`, `{} {}`} {
		f.Add("reload", []byte(s))
	}
	f.Add("nope", []byte("{}"))
	f.Fuzz(func(t *testing.T, name string, payload []byte) {
		c, err := ParseCommand(name, payload)
		if err != nil {
			return
		}
		known := false
		for _, k := range KnownCommands {
			known = known || k == c.Name
		}
		if !known {
			t.Fatalf("accepted the unknown command %q", c.Name)
		}
		if c.Camera != "" && !ValidName(c.Camera) {
			t.Fatalf("accepted the camera name %q", c.Camera)
		}
		if len(payload) > maxCommandPayload {
			t.Fatalf("accepted a %d-byte payload", len(payload))
		}
	})
}
