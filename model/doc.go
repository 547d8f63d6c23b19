// Package model owns what the Leafwatch network is: the AlexNet variants
// (torchvision and the original BVLC/Caffe one) with any class count, the
// labels, the Model and its tensors, head replacement, the checkpoint
// format (safetensors tensors under torchvision names plus metadata), the
// Engine interface every backend implements and the FC precisions' names.
//
// It imports none of the packages below it: model/cpu is the CPU engine,
// model/gpu the CUDA engine, model/engine chooses between them, model/onnx
// converts weights to and from ONNX and torch state dicts, and dnncheck
// and ortcheck cross-check the engines against OpenCV DNN and onnxruntime.
package model
