package model

import (
	"sort"
	"testing"
)

func TestPlantVillageLabels(t *testing.T) {
	l := PlantVillageLabels()
	if len(l) != 38 {
		t.Fatalf("%d labels", len(l))
	}
	if !sort.StringsAreSorted(l) {
		t.Error("labels are not in sorted order")
	}
	healthy := 0
	for _, s := range l {
		if IsHealthy(s) {
			healthy++
		}
	}
	if healthy != 12 {
		t.Errorf("%d healthy classes, PlantVillage has 12", healthy)
	}
}

func TestDisplayLabel(t *testing.T) {
	for in, want := range map[string]string{
		"Corn_(maize)___Common_rust_":                        "Corn (maize): Common rust",
		"Pepper,_bell___healthy":                             "Pepper, bell: healthy",
		"Corn_(maize)___Cercospora_leaf_spot Gray_leaf_spot": "Corn (maize): Cercospora leaf spot Gray leaf spot",
		"n01440764 tench":                                    "n01440764 tench",
	} {
		if got := DisplayLabel(in); got != want {
			t.Errorf("DisplayLabel(%q) = %q, want %q", in, got, want)
		}
	}
}
