package model

import "fmt"

// Precision is how the CPU engine stores the fully connected layers'
// weights. The FC layers hold 90% of AlexNet's weights (219 MB in fp32) and,
// for one image, every weight is read once per inference: their time is
// memory bandwidth. Reduced precision shrinks what is read; activations
// and accumulation stay fp32, and the convolutions are unchanged. The CUDA
// engine knows fp32 and fp16 (see model/gpu.New); it runs the others in
// fp32.
type Precision string

const (
	// FP32 keeps the checkpoint's weights: the zero Options' precision
	// (training, and evaluation while training, always run in fp32).
	FP32 Precision = "fp32"
	// FP16 stores each output row as IEEE half precision with one fp32
	// scale (the row's largest magnitude maps to 1, so nothing overflows
	// and the row keeps 11 significant bits): half the bytes.
	FP16 Precision = "fp16"
	// BF16 keeps each weight's top 16 bits (bfloat16, rounded to nearest
	// even): half the bytes, 8 significant bits.
	BF16 Precision = "bf16"
	// INT8 stores each output row as int8 with one fp32 scale (symmetric,
	// max-abs): a quarter of the bytes.
	INT8 Precision = "int8"
)

// DefaultPrecision is what the programs classify with when their
// configuration names none (leafwatchd's precision:, finetune predict's
// --precision): fp16 FC weights. It agreed with fp32 on every top-1
// answer measured (synthetic leaves on a He-initialised and on an
// ImageNet-like base, a greenhouse-tuned model's leaf regions and kept
// samples; largest probability difference 0.0006: `make
// precision-agreement`), and reads half the bytes: ~100 MB less memory
// and ~25% faster for one image on a CPU. A library caller's zero
// Options stay fp32.
const DefaultPrecision = FP16

// ParsePrecision accepts "", fp32, fp16, bf16 and int8.
func ParsePrecision(s string) (Precision, error) {
	switch Precision(s) {
	case "", FP32:
		return FP32, nil
	case FP16, BF16, INT8:
		return Precision(s), nil
	}
	return "", fmt.Errorf("precision %q: use fp32, fp16, bf16 or int8", s)
}
