package cpu

import (
	"testing"

	"github.com/leafwatch/leafwatch/model"
)

// TestFloorWork: the floor's count of one image's work — fc6 and fc7 at
// the precision's width, fc8 (under a million weights) fp32 as the engine
// keeps it, and AlexNet's published multiply-adds for the convolutions
// (torchvision 655 M, bvlc's 227×227 with groups 666 M).
func TestFloorWork(t *testing.T) {
	skipEmulated(t, "counting, the same on every architecture (16 s of weight drawing under qemu)")
	const fc67, fc8 = 9216*4096 + 4096*4096, 4096 * 38
	for _, tc := range []struct {
		v     model.Variant
		p     model.Precision
		bytes int64
		macs  float64 // millions
	}{
		{model.TorchVision, model.FP32, (fc67 + fc8) * 4, 655},
		{model.TorchVision, model.FP16, fc67*2 + fc8*4, 655},
		{model.TorchVision, model.INT8, fc67 + fc8*4, 655},
		{model.BVLC, model.FP16, fc67*2 + fc8*4, 666},
	} {
		m, err := model.NewRandom(tc.v, 38, 1)
		if err != nil {
			t.Fatal(err)
		}
		b, flops := work(m, tc.p)
		if b != tc.bytes {
			t.Errorf("%s %s: %d FC bytes, want %d", tc.v, tc.p, b, tc.bytes)
		}
		if macs := flops / 2 / 1e6; macs < tc.macs-1 || macs > tc.macs+1 {
			t.Errorf("%s: %.1f M multiply-adds in the convolutions, want %.0f M", tc.v, macs, tc.macs)
		}
	}
	f := Floor{ReadGBps: 40, GEMMGFLOPs: 200, FCBytes: 200e6, ConvFLOPs: 1e9}
	if ms := f.MS(); ms < 9.99 || ms > 10.01 {
		t.Errorf("200 MB at 40 GB/s plus 1 GFLOP at 200 GFLOP/s: %.3f ms, want 10", ms)
	}
}
