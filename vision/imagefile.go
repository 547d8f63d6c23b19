package vision

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	_ "image/jpeg" // DecodeConfig for the formats CheckImage walks
	_ "image/png"
	"os"

	"gocv.io/x/gocv"
	_ "golang.org/x/image/bmp"
)

// ErrBadImage marks a file that is not a usable image; the message says why
// (empty, not an image, truncated, too small).
var ErrBadImage = errors.New("unusable image")

// MinImageSide is the smallest width or height accepted.
const MinImageSide = 8

// CheckImage checks that b is a complete JPEG, PNG or BMP at least
// MinImageSide pixels each way. Decoders forgive a file cut short (libjpeg
// fills the missing rows with grey and only warns on stderr), so the check
// walks the file's structure to its end marker. Other formats OpenCV reads
// (WebP, TIFF) pass unchecked.
func CheckImage(b []byte) error {
	if len(b) == 0 {
		return fmt.Errorf("%w: the file is empty (0 bytes)", ErrBadImage)
	}
	var err error
	switch {
	case bytes.HasPrefix(b, []byte{0xff, 0xd8, 0xff}):
		err = checkJPEG(b)
	case bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")):
		err = checkPNG(b)
	case bytes.HasPrefix(b, []byte("BM")):
		err = checkBMP(b)
	case bytes.HasPrefix(b, []byte("RIFF")) && len(b) >= 12 && string(b[8:12]) == "WEBP",
		bytes.HasPrefix(b, []byte("II*\x00")), bytes.HasPrefix(b, []byte("MM\x00*")):
		return nil
	default:
		return fmt.Errorf("%w: not an image (neither JPEG, PNG nor BMP; %d bytes)", ErrBadImage, len(b))
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadImage, err)
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("%w: damaged header: %v", ErrBadImage, err)
	}
	if cfg.Width < MinImageSide || cfg.Height < MinImageSide {
		return fmt.Errorf("%w: %s is only %dx%d pixels", ErrBadImage, format, cfg.Width, cfg.Height)
	}
	return nil
}

// checkJPEG follows the marker segments, and the entropy-coded data after
// each start of scan, to the end-of-image marker. Bytes after it (camera
// trailers) are allowed.
func checkJPEG(b []byte) error {
	i := 2
	for {
		// Markers may be preceded by fill bytes 0xFF.
		for i < len(b) && b[i] == 0xff && i+1 < len(b) && b[i+1] == 0xff {
			i++
		}
		if i+1 >= len(b) {
			return fmt.Errorf("truncated JPEG: it ends after %d bytes without an end-of-image marker", len(b))
		}
		if b[i] != 0xff {
			return fmt.Errorf("damaged JPEG: no marker at byte %d", i)
		}
		m := b[i+1]
		i += 2
		switch {
		case m == 0xd9: // EOI
			return nil
		case m == 0x01 || (m >= 0xd0 && m <= 0xd7): // no length
			continue
		}
		if i+2 > len(b) {
			return fmt.Errorf("truncated JPEG: it ends inside a header after %d bytes", len(b))
		}
		n := int(binary.BigEndian.Uint16(b[i:]))
		if n < 2 || i+n > len(b) {
			return fmt.Errorf("truncated JPEG: a %d-byte segment at byte %d runs past the end (%d bytes)", n, i, len(b))
		}
		i += n
		if m != 0xda { // not SOS
			continue
		}
		// Entropy-coded data: 0xFF is stuffed as FF 00, restart markers
		// are FF D0..D7; any other FF xx is the next marker.
		for {
			j := bytes.IndexByte(b[i:], 0xff)
			if j < 0 || i+j+1 >= len(b) {
				return fmt.Errorf("truncated JPEG: the image data stops after %d bytes without an end-of-image marker", len(b))
			}
			i += j
			if n := b[i+1]; n == 0x00 || (n >= 0xd0 && n <= 0xd7) || n == 0xff {
				i++
				if n != 0xff {
					i++
				}
				continue
			}
			break
		}
	}
}

// checkPNG follows the chunks to IEND.
func checkPNG(b []byte) error {
	i := 8
	for {
		if i+8 > len(b) {
			return fmt.Errorf("truncated PNG: it ends after %d bytes without an IEND chunk", len(b))
		}
		n := int64(binary.BigEndian.Uint32(b[i:]))
		typ := string(b[i+4 : i+8])
		if int64(i)+12+n > int64(len(b)) {
			return fmt.Errorf("truncated PNG: chunk %s runs past the end (%d bytes)", typ, len(b))
		}
		i += 12 + int(n)
		if typ == "IEND" {
			return nil
		}
	}
}

// checkBMP checks that an uncompressed bitmap holds all its rows.
func checkBMP(b []byte) error {
	if len(b) < 26 {
		return fmt.Errorf("truncated BMP: only %d bytes", len(b))
	}
	off := int64(binary.LittleEndian.Uint32(b[10:]))
	hdr := binary.LittleEndian.Uint32(b[14:])
	if hdr < 40 || len(b) < 34 {
		return nil // OS/2 headers: left to the decoder
	}
	w := int64(int32(binary.LittleEndian.Uint32(b[18:])))
	h := int64(int32(binary.LittleEndian.Uint32(b[22:])))
	bpp := int64(binary.LittleEndian.Uint16(b[28:]))
	comp := binary.LittleEndian.Uint32(b[30:])
	if comp != 0 && comp != 3 { // RLE, JPEG or PNG inside: no fixed size
		return nil
	}
	if h < 0 {
		h = -h
	}
	stride := (w*bpp + 31) / 32 * 4
	if need := off + stride*h; need > int64(len(b)) {
		return fmt.Errorf("truncated BMP: %d of %d bytes", len(b), need)
	}
	return nil
}

// ReadImage reads an image file as 8-bit BGR after CheckImage. Every
// Leafwatch path that reads image files (the folder camera, finetune's
// training, evaluation and prediction) decodes through here, so a file
// becomes the same pixels everywhere.
func ReadImage(path string, dst *gocv.Mat) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := CheckImage(b); err != nil {
		return err
	}
	m, err := gocv.IMDecode(b, gocv.IMReadColor)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadImage, err)
	}
	defer m.Close()
	if m.Empty() {
		return fmt.Errorf("%w: OpenCV cannot decode it", ErrBadImage)
	}
	m.CopyTo(dst)
	return nil
}
