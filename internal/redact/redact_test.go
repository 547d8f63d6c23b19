package redact

import "testing"

func TestPasswords(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"rtsp://admin:s3cret@cam/stream", "rtsp://admin:xxxxx@cam/stream"},
		{"tcp://leafwatch:s3cret@10.0.0.5:1883", "tcp://leafwatch:xxxxx@10.0.0.5:1883"},
		{"ws://u:p@ss@host:80/mqtt", "ws://u:xxxxx@host:80/mqtt"},
		{`parse "tcp://u:s3cret@h:x1": invalid port ":x1" after host`, `parse "tcp://u:xxxxx@h:x1": invalid port ":x1" after host`},
		{"rtspsrc location=rtsp://a:b@cam/x ! decodebin", "rtspsrc location=rtsp://a:xxxxx@cam/x ! decodebin"},
		{"two rtsp://a:one@c1/x and rtsp://b:two@c2/y", "two rtsp://a:xxxxx@c1/x and rtsp://b:xxxxx@c2/y"},
		{"tcp://leafwatch@host:1883", "tcp://leafwatch@host:1883"}, // a user alone is no secret
		{"tcp://host:1883", "tcp://host:1883"},
		{"csi://0?width=1920", "csi://0?width=1920"},
		{"mailto-like a:b@c", "mailto-like a:b@c"}, // not a URL
	} {
		if got := Passwords(tc.in); got != tc.want {
			t.Errorf("Passwords(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
