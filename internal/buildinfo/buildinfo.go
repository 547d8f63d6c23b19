// Package buildinfo owns the version the programs report (--version, MQTT
// discovery's sw_version, the update state): set at build time with
// -ldflags "-X github.com/leafwatch/leafwatch/internal/buildinfo.Version=…"
// (scripts/package.sh does), else the module version Go recorded, else
// "dev".
package buildinfo

import "runtime/debug"

// Version is the release the binary was built as.
var Version = ""

// String is Version, or what the Go build recorded when it was not set.
func String() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
