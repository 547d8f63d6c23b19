// Package dnncheck holds the cross-checks and peer benchmark of the model
// engine against OpenCV's DNN module on the same exported ONNX weights. It
// has no code of its own: it exists so the model package stays buildable
// without cgo while these tests use gocv.
package dnncheck
