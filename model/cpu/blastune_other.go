//go:build !cgo || purego

package cpu

// TuneBLAS does nothing without OpenBLAS.
func TuneBLAS() {}

// BLASTuneNote is empty without OpenBLAS.
func BLASTuneNote() string { return "" }
