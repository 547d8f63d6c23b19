// Package systemd ships leafwatchd's systemd unit and its documented
// default configuration; the daemon embeds the config for
// `leafwatchd print-default-config`.
package systemd

import _ "embed"

// ExampleConfig is leafwatchd.yaml, the documented default configuration.
//
//go:embed leafwatchd.yaml
var ExampleConfig string

// Unit is leafwatchd.service.
//
//go:embed leafwatchd.service
var Unit string

// JetsonDropIn is jetson.conf, the drop-in for NVIDIA Jetson boards.
//
//go:embed jetson.conf
var JetsonDropIn string

// CUDADropIn is cuda.conf, the drop-in for CUDA builds.
//
//go:embed cuda.conf
var CUDADropIn string

// PathUnit is leafwatchd.path, which starts the service once a model exists.
//
//go:embed leafwatchd.path
var PathUnit string
