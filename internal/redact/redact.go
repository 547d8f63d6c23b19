// Package redact owns hiding secrets in text bound for logs, errors and
// status pages: the passwords of URLs (camera URIs, a GStreamer pipeline's
// rtspsrc location=…, broker URLs), wherever in the text they appear.
package redact

import "regexp"

// credentials matches the password of any URL inside a string. The
// password ends at the last '@' before the host (url.Parse's rule too),
// so a password containing '@' (or a space, which url.Parse refuses and
// its error then quotes) is hidden whole.
var credentials = regexp.MustCompile(`((?:[A-Za-z][A-Za-z0-9+.-]*)?://[^/@\s:]*):[^/\n]*@`)

// Passwords replaces the passwords of URLs in s: rtsp://user:pw@cam
// becomes rtsp://user:xxxxx@cam.
func Passwords(s string) string { return credentials.ReplaceAllString(s, "${1}:xxxxx@") }
