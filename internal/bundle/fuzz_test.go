package bundle

import "testing"

// FuzzParseManifest: a manifest arrives over MQTT inside an announcement;
// any bytes are refused with an error or parse into one that marshals
// back to a manifest that parses the same.
func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(`{"format":"leafwatch-model","format_version":1}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"format":"leafwatch-model","format_version":1,"version":"0123456789ab","file":"m","sha256":"` +
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" + `","size":1,"variant":"torchvision","input_size":224,"labels":["a"],"labels_sha256":"x","created":"2026-12-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b)
		if err != nil {
			return
		}
		again, err := ParseManifest(m.Marshal())
		if err != nil {
			t.Fatalf("a parsed manifest does not parse after Marshal: %v", err)
		}
		if again.SHA256 != m.SHA256 || again.Size != m.Size || len(again.Labels) != len(m.Labels) {
			t.Fatalf("round trip changed the manifest: %+v vs %+v", m, again)
		}
	})
}
