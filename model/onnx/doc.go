// Package onnx owns weight interchange: reading ONNX AlexNets (the
// torchvision export and the BVLC model of the ONNX zoo) through its own
// protobuf codec, writing Leafwatch models as ONNX for other runtimes, and
// importing torchvision state dicts saved with safetensors. It builds
// models through package model and knows nothing of engines.
package onnx
