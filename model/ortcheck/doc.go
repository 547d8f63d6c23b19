// Package ortcheck holds the cross-check and peer benchmark of the model
// engine against onnxruntime on the same exported ONNX weights. Its tests
// build only with -tags onnxruntime, so nothing Leafwatch ships depends on
// onnxruntime; `make bench` installs the library (from the npm package
// onnxruntime-node, see scripts/onnxruntime.sh) and runs them.
package ortcheck
