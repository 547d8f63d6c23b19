//go:build !cgo || purego

package cpu

// TuneBLAS does nothing without OpenBLAS.
func TuneBLAS() {}
