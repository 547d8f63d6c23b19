package model

import (
	"strings"
)

// plantVillage holds the 38 PlantVillage class folder names exactly as the
// dataset spells them (sorted, the order the paper's models use).
var plantVillage = []string{
	"Apple___Apple_scab",
	"Apple___Black_rot",
	"Apple___Cedar_apple_rust",
	"Apple___healthy",
	"Blueberry___healthy",
	"Cherry_(including_sour)___Powdery_mildew",
	"Cherry_(including_sour)___healthy",
	"Corn_(maize)___Cercospora_leaf_spot Gray_leaf_spot",
	"Corn_(maize)___Common_rust_",
	"Corn_(maize)___Northern_Leaf_Blight",
	"Corn_(maize)___healthy",
	"Grape___Black_rot",
	"Grape___Esca_(Black_Measles)",
	"Grape___Leaf_blight_(Isariopsis_Leaf_Spot)",
	"Grape___healthy",
	"Orange___Haunglongbing_(Citrus_greening)",
	"Peach___Bacterial_spot",
	"Peach___healthy",
	"Pepper,_bell___Bacterial_spot",
	"Pepper,_bell___healthy",
	"Potato___Early_blight",
	"Potato___Late_blight",
	"Potato___healthy",
	"Raspberry___healthy",
	"Soybean___healthy",
	"Squash___Powdery_mildew",
	"Strawberry___Leaf_scorch",
	"Strawberry___healthy",
	"Tomato___Bacterial_spot",
	"Tomato___Early_blight",
	"Tomato___Late_blight",
	"Tomato___Leaf_Mold",
	"Tomato___Septoria_leaf_spot",
	"Tomato___Spider_mites Two-spotted_spider_mite",
	"Tomato___Target_Spot",
	"Tomato___Tomato_Yellow_Leaf_Curl_Virus",
	"Tomato___Tomato_mosaic_virus",
	"Tomato___healthy",
}

// PlantVillageLabels returns a copy of the 38 PlantVillage class names.
func PlantVillageLabels() []string { return append([]string(nil), plantVillage...) }

// SplitLabel splits a PlantVillage-style label "Crop___Condition" into its
// crop and condition, tidied for display ("Corn (maize)", "Common rust").
// Labels without the triple underscore come back whole as the condition.
func SplitLabel(label string) (crop, condition string) {
	c, cond, ok := strings.Cut(label, "___")
	if !ok {
		return "", tidy(label)
	}
	return tidy(c), tidy(cond)
}

func tidy(s string) string {
	s = strings.ReplaceAll(s, "_", " ")
	s = strings.Join(strings.Fields(s), " ")
	return strings.TrimSpace(s)
}

// NotALeaf is the label of a region with no leaf in it (soil, a pot, a
// stem), which a model trained with a reject class answers. It is
// neither healthy nor a disease: it never alerts.
const NotALeaf = "not_a_leaf"

// IsNotALeaf reports whether a label is the reject class.
func IsNotALeaf(label string) bool { return label == NotALeaf }

// IsHealthy reports whether a label names a healthy plant. Healthy
// classes never raise alerts.
func IsHealthy(label string) bool {
	_, cond := SplitLabel(label)
	return strings.EqualFold(cond, "healthy")
}

// DisplayLabel is a human-readable form: "Tomato: Late blight".
func DisplayLabel(label string) string {
	crop, cond := SplitLabel(label)
	if crop == "" {
		return cond
	}
	return crop + ": " + cond
}
