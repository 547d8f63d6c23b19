// Command demovideo writes the demo's synthetic greenhouse video: frames of
// a healthy leaf, then a diseased one, then healthy again, taken from a
// synthetic dataset folder, at 4 frames per second.
package main

import (
	"flag"
	"fmt"
	"image"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"gocv.io/x/gocv"
)

func main() {
	data := flag.String("data", "", "synthetic dataset folder")
	out := flag.String("out", "", "video to write (.avi)")
	flag.Parse()
	des, err := os.ReadDir(*data)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demovideo:", err)
		os.Exit(1)
	}
	var healthy, sick string
	var classes []string
	for _, de := range des {
		if de.IsDir() {
			classes = append(classes, de.Name())
		}
	}
	sort.Strings(classes)
	for _, c := range classes {
		if strings.HasSuffix(c, "healthy") && healthy == "" {
			healthy = c
		} else if !strings.HasSuffix(c, "healthy") && sick == "" {
			sick = c
		}
	}
	vw, err := gocv.VideoWriterFile(*out, "MJPG", 4, 512, 384, true)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demovideo:", err)
		os.Exit(1)
	}
	defer vw.Close()
	// 5 s healthy, 8 s diseased, 6 s healthy; the images come from the
	// validation end of each class folder.
	for _, seg := range []struct {
		class string
		secs  int
	}{{healthy, 5}, {sick, 8}, {healthy, 6}} {
		files, _ := filepath.Glob(filepath.Join(*data, seg.class, "*.jpg"))
		sort.Strings(files)
		for i := 0; i < seg.secs*4; i++ {
			img := gocv.IMRead(files[len(files)-1-(i/4)%4], gocv.IMReadColor)
			frame := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(60, 80, 90, 0), 384, 512, gocv.MatTypeCV8UC3)
			// The leaf fills the centre, as a camera close to a plant sees it.
			roi := frame.Region(image.Rect(64, 0, 448, 384))
			gocv.Resize(img, &roi, image.Pt(384, 384), 0, 0, gocv.InterpolationLinear)
			vw.Write(frame)
			roi.Close()
			frame.Close()
			img.Close()
		}
	}
	fmt.Printf("wrote %s (%s → %s → %s)\n", *out, healthy, sick, healthy)
}
