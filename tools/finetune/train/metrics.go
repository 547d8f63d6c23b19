package train

import (
	"encoding/csv"
	"fmt"
	"os"
	"strconv"
)

// Confusion counts predictions: M[true][predicted].
type Confusion struct {
	Classes []string
	M       [][]int
	// Skipped lists validation files that could not be read, with the
	// reason; they are not counted.
	Skipped []string
}

// NewConfusion makes an empty matrix.
func NewConfusion(classes []string) *Confusion {
	m := make([][]int, len(classes))
	for i := range m {
		m[i] = make([]int, len(classes))
	}
	return &Confusion{Classes: classes, M: m}
}

// Add records one prediction.
func (c *Confusion) Add(truth, pred int) { c.M[truth][pred]++ }

// ClassStats are one class's precision, recall and F1.
type ClassStats struct {
	Class                 string
	Precision, Recall, F1 float64
	Support               int
}

// Report summarises a confusion matrix.
type Report struct {
	Accuracy float64
	MacroF1  float64
	Total    int
	PerClass []ClassStats
}

// Report computes accuracy, per-class precision/recall/F1 and macro-F1
// (the PlantVillage paper's headline metric). Classes absent from the
// truth are left out of the macro average.
func (c *Confusion) Report() Report {
	n := len(c.Classes)
	var r Report
	correct := 0
	var f1sum float64
	f1n := 0
	for i := 0; i < n; i++ {
		tp, fp, fn := c.M[i][i], 0, 0
		for j := 0; j < n; j++ {
			r.Total += c.M[i][j]
			if j != i {
				fn += c.M[i][j]
				fp += c.M[j][i]
			}
		}
		correct += tp
		cs := ClassStats{Class: c.Classes[i], Support: tp + fn}
		if tp+fp > 0 {
			cs.Precision = float64(tp) / float64(tp+fp)
		}
		if tp+fn > 0 {
			cs.Recall = float64(tp) / float64(tp+fn)
		}
		if cs.Precision+cs.Recall > 0 {
			cs.F1 = 2 * cs.Precision * cs.Recall / (cs.Precision + cs.Recall)
		}
		if cs.Support > 0 {
			f1sum += cs.F1
			f1n++
		}
		r.PerClass = append(r.PerClass, cs)
	}
	if r.Total > 0 {
		r.Accuracy = float64(correct) / float64(r.Total)
	}
	if f1n > 0 {
		r.MacroF1 = f1sum / float64(f1n)
	}
	return r
}

// WriteCSV writes the matrix with class names as header and first column.
func (c *Confusion) WriteCSV(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.Write(append([]string{"true\\predicted"}, c.Classes...))
	for i, row := range c.M {
		rec := []string{c.Classes[i]}
		for _, v := range row {
			rec = append(rec, strconv.Itoa(v))
		}
		w.Write(rec)
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// WriteReportCSV writes per-class precision, recall, F1 and support.
func (r Report) WriteCSV(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.Write([]string{"class", "precision", "recall", "f1", "support"})
	for _, c := range r.PerClass {
		w.Write([]string{c.Class, fmt.Sprintf("%.4f", c.Precision), fmt.Sprintf("%.4f", c.Recall), fmt.Sprintf("%.4f", c.F1), strconv.Itoa(c.Support)})
	}
	w.Write([]string{"macro", "", "", fmt.Sprintf("%.4f", r.MacroF1), strconv.Itoa(r.Total)})
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// writeSourceReport writes report.csv: per class precision, recall, F1 and
// support over all validation images, then the same for each source that
// has images (plantvillage_*, field_*), side by side; the last row has
// the accuracies and macro-F1s.
func writeSourceReport(path string, all Report, bySource [2]Report) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	head := []string{"class", "precision", "recall", "f1", "support"}
	var parts []Report
	for i, r := range bySource {
		if r.Total > 0 && (bySource[1-i].Total > 0) {
			parts = append(parts, r)
			for _, k := range []string{"precision", "recall", "f1", "support"} {
				head = append(head, SourceNames[i]+"_"+k)
			}
		}
	}
	w.Write(head)
	for i, c := range all.PerClass {
		row := []string{c.Class, fmt.Sprintf("%.4f", c.Precision), fmt.Sprintf("%.4f", c.Recall), fmt.Sprintf("%.4f", c.F1), strconv.Itoa(c.Support)}
		for _, p := range parts {
			s := p.PerClass[i]
			row = append(row, fmt.Sprintf("%.4f", s.Precision), fmt.Sprintf("%.4f", s.Recall), fmt.Sprintf("%.4f", s.F1), strconv.Itoa(s.Support))
		}
		w.Write(row)
	}
	last := []string{"accuracy/macro-F1", fmt.Sprintf("%.4f", all.Accuracy), "", fmt.Sprintf("%.4f", all.MacroF1), strconv.Itoa(all.Total)}
	for _, p := range parts {
		last = append(last, fmt.Sprintf("%.4f", p.Accuracy), "", fmt.Sprintf("%.4f", p.MacroF1), strconv.Itoa(p.Total))
	}
	w.Write(last)
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
