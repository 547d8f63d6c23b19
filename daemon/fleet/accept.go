package fleet

import (
	"context"
	"fmt"
	"slices"
)

// Example is one labelled sample: the region JPEG the serving model saw
// and the label a person gave it.
type Example struct {
	ID       string
	Label    string
	Baseline bool                   // kept at random (the honest set)
	Read     func() ([]byte, error) // the JPEG, read when compared
}

// Acceptance is the comparison that decided a candidate.
type Acceptance struct {
	Set       string  `json:"set"`     // baseline, labelled, or none
	Samples   int     `json:"samples"` // compared
	Serving   float64 `json:"serving_accuracy"`
	Candidate float64 `json:"candidate_accuracy"`
	Tolerance float64 `json:"tolerance_points"`
	Taken     bool    `json:"taken"`
	Rule      string  `json:"rule"` // the decision in words
}

// maxExamples bounds the comparison: at ~10 ms a sample per model on a
// CPU, 1000 samples take under a minute.
const maxExamples = 1000

// choose picks the comparison set: the baseline samples (kept at random:
// an honest estimate) when there are at least min of them, else every
// labelled one; labels neither model knows are left out (neither can be
// right). The newest maxExamples are kept.
func choose(all []Example, min int, serving, candidate []string) (set string, out []Example) {
	known := func(l string) bool { return slices.Contains(serving, l) || slices.Contains(candidate, l) }
	var base, any []Example
	for _, e := range all {
		if !known(e.Label) {
			continue
		}
		any = append(any, e)
		if e.Baseline {
			base = append(base, e)
		}
	}
	set, out = "labelled", any
	if len(base) >= min {
		set, out = "baseline", base
	}
	if len(out) > maxExamples {
		out = out[len(out)-maxExamples:]
	}
	return set, out
}

// compare runs both models on the examples and decides.
func compare(ctx context.Context, cfg Config, ex []Example, set string, serving, cand Model) (Acceptance, error) {
	a := Acceptance{Set: set, Samples: len(ex), Tolerance: cfg.Tolerance}
	if len(ex) < cfg.MinSamples {
		a.Taken = cfg.WithoutSamples == "install"
		verb := "taken without a comparison (without_samples: install)"
		if !a.Taken {
			verb = "refused (without_samples: refuse)"
		}
		a.Rule = fmt.Sprintf("only %d labelled samples, fewer than min_samples %d: %s", len(ex), cfg.MinSamples, verb)
		if len(ex) == 0 {
			a.Set = "none"
		}
		return a, nil
	}
	var err error
	if a.Serving, err = accuracy(ctx, serving, ex); err != nil {
		return a, fmt.Errorf("the serving model on the labelled samples: %w", err)
	}
	if a.Candidate, err = accuracy(ctx, cand, ex); err != nil {
		return a, fmt.Errorf("the candidate on the labelled samples: %w", err)
	}
	a.Taken = a.Candidate >= a.Serving-cfg.Tolerance/100-1e-9
	verb := "taken"
	if !a.Taken {
		verb = "refused"
	}
	a.Rule = fmt.Sprintf("%s on %d %s samples: candidate %.1f%% vs serving %.1f%% (tolerance %.1f points)",
		verb, len(ex), set, 100*a.Candidate, 100*a.Serving, cfg.Tolerance)
	return a, nil
}

func accuracy(ctx context.Context, m Model, ex []Example) (float64, error) {
	pred, err := m.Predict(ctx, ex)
	if err != nil {
		return 0, err
	}
	if len(pred) != len(ex) {
		return 0, fmt.Errorf("%d predictions for %d samples", len(pred), len(ex))
	}
	right := 0
	for i, p := range pred {
		if p == ex[i].Label {
			right++
		}
	}
	return float64(right) / float64(len(ex)), nil
}
