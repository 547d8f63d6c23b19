package vision

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gocv.io/x/gocv"
)

func encoded(t *testing.T, ext string, w, h int, params ...int) []byte {
	t.Helper()
	img := gocv.NewMatWithSize(h, w, gocv.MatTypeCV8UC3)
	defer img.Close()
	data, _ := img.DataPtrUint8()
	for i := range data {
		data[i] = uint8((i*31 + i/(w*3)*17) % 251)
	}
	gocv.Circle(&img, image.Pt(w/2, h/2), h/3, color.RGBA{R: 200, G: 40, B: 10}, -1)
	var buf *gocv.NativeByteBuffer
	var err error
	if len(params) > 0 {
		buf, err = gocv.IMEncodeWithParams(gocv.FileExt(ext), img, params)
	} else {
		buf, err = gocv.IMEncode(gocv.FileExt(ext), img)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	return bytes.Clone(buf.GetBytes())
}

// TestCheckImageFindsWhatDecodersForgive: complete files of each kind
// pass; empty, foreign, tiny and cut-off ones fail with the reason. libjpeg
// turns a JPEG cut in half into an image with grey rows and a warning on
// stderr, which is why the check walks the structure.
func TestCheckImageFindsWhatDecodersForgive(t *testing.T) {
	jpg := encoded(t, ".jpg", 320, 240)
	prog := encoded(t, ".jpg", 320, 240, gocv.IMWriteJpegProgressive, 1)
	rst := encoded(t, ".jpg", 320, 240, gocv.IMWriteJpegRstInterval, 2)
	png := encoded(t, ".png", 320, 240)
	bmp := encoded(t, ".bmp", 321, 240) // odd width: padded rows
	good := map[string][]byte{
		"jpeg": jpg, "progressive jpeg": prog, "jpeg with restart markers": rst, "png": png, "bmp": bmp,
		"jpeg with a trailer": append(bytes.Clone(jpg), []byte("camera maker trailer \xff\xd8 bytes")...),
	}
	for name, b := range good {
		if err := CheckImage(b); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	bad := []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "empty"},
		{"text", []byte("notes about my plants\n"), "not an image"},
		{"tiny png", encoded(t, ".png", 4, 4), "only 4x4"},
		{"png without IEND", png[:len(png)-12], "truncated PNG"},
		{"png cut in half", png[:len(png)/2], "truncated PNG"},
		{"bmp cut", bmp[:len(bmp)-100], "truncated BMP"},
		{"jpeg header only", jpg[:300], "truncated JPEG"},
	}
	for _, frac := range []int{10, 50, 90, 99} {
		for name, b := range map[string][]byte{"jpeg": jpg, "progressive jpeg": prog, "jpeg with restart markers": rst} {
			bad = append(bad, struct {
				name string
				b    []byte
				want string
			}{fmt.Sprintf("%s cut at %d%%", name, frac), b[:len(b)*frac/100], "truncated JPEG"})
		}
	}
	bad = append(bad, struct {
		name string
		b    []byte
		want string
	}{"jpeg without its last byte", jpg[:len(jpg)-1], "truncated JPEG"})
	for _, tc := range bad {
		err := CheckImage(tc.b)
		if err == nil || !errors.Is(err, ErrBadImage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestReadImageDecodesLikeOpenCV: ReadImage gives the pixels imread gives,
// and refuses a truncated file that imread would half-decode.
func TestReadImageDecodesLikeOpenCV(t *testing.T) {
	dir := t.TempDir()
	for _, ext := range []string{".jpg", ".png", ".bmp"} {
		p := filepath.Join(dir, "leaf"+ext)
		os.WriteFile(p, encoded(t, ext, 200, 150), 0o644)
		want := gocv.IMRead(p, gocv.IMReadColor)
		got := gocv.NewMat()
		if err := ReadImage(p, &got); err != nil {
			t.Fatalf("%s: %v", ext, err)
		}
		a, _ := want.DataPtrUint8()
		b, _ := got.DataPtrUint8()
		if !bytes.Equal(a, b) {
			t.Errorf("%s: ReadImage differs from imread", ext)
		}
		want.Close()
		got.Close()
	}
	half := filepath.Join(dir, "half.jpg")
	jpg := encoded(t, ".jpg", 200, 150)
	os.WriteFile(half, jpg[:len(jpg)/2], 0o644)
	m := gocv.IMRead(half, gocv.IMReadColor)
	forgiven := !m.Empty()
	m.Close()
	dst := gocv.NewMat()
	defer dst.Close()
	if err := ReadImage(half, &dst); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("half a JPEG: %v (imread decodes it: %v)", err, forgiven)
	}
}
