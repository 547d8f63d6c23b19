// Package train owns fine-tuning: image-folder datasets (and the synthetic
// PlantVillage-like generator), augmentation and parallel decoding, head
// replacement, SGD with momentum and savable state, learning-rate
// schedules, the training loop with resume, and the evaluation reports.
// The finetune program is a thin command line over it.
package train
