package train

import (
	"fmt"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/palette"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

type confGrid struct{ c *Confusion }

func (g confGrid) Dims() (int, int) { return len(g.c.M), len(g.c.M) }
func (g confGrid) X(c int) float64  { return float64(c) }
func (g confGrid) Y(r int) float64  { return float64(r) }

// Z is the row-normalised rate, so rare classes are as visible as common ones.
func (g confGrid) Z(c, r int) float64 {
	row := g.c.M[len(g.c.M)-1-r]
	total := 0
	for _, v := range row {
		total += v
	}
	if total == 0 {
		return 0
	}
	return float64(row[c]) / float64(total)
}

// WriteConfusionPNG draws the row-normalised confusion matrix as a heatmap.
func WriteConfusionPNG(c *Confusion, path string) error {
	p := plot.New()
	p.Title.Text = "Confusion matrix (rows: true class, normalised)"
	p.X.Label.Text = "predicted class index"
	p.Y.Label.Text = "true class index (top = 0)"
	hm := plotter.NewHeatMap(confGrid{c}, palette.Heat(32, 1))
	hm.Min, hm.Max = 0, 1
	p.Add(hm)
	size := vg.Length(4+0.12*float64(len(c.Classes))) * vg.Inch
	if err := p.Save(size, size, path); err != nil {
		return fmt.Errorf("confusion plot: %w", err)
	}
	return nil
}

// WriteCurvesPNG plots loss and accuracy per epoch.
func WriteCurvesPNG(h []EpochLog, path string) error {
	p := plot.New()
	p.Title.Text = "Training curves"
	p.X.Label.Text = "epoch"
	series := map[string]func(EpochLog) float64{
		"train loss":   func(e EpochLog) float64 { return e.TrainLoss },
		"val loss":     func(e EpochLog) float64 { return e.ValLoss },
		"train acc":    func(e EpochLog) float64 { return e.TrainAcc },
		"val acc":      func(e EpochLog) float64 { return e.ValAcc },
		"val macro-F1": func(e EpochLog) float64 { return e.ValMacroF1 },
	}
	i := 0
	for _, name := range []string{"train loss", "val loss", "train acc", "val acc", "val macro-F1"} {
		pts := make(plotter.XYs, len(h))
		for j, e := range h {
			pts[j].X, pts[j].Y = float64(e.Epoch), series[name](e)
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		l.Color = plotutil.Color(i)
		p.Add(l)
		p.Legend.Add(name, l)
		i++
	}
	p.Legend.Top = true
	if err := p.Save(7*vg.Inch, 4.5*vg.Inch, path); err != nil {
		return fmt.Errorf("curves plot: %w", err)
	}
	return nil
}
