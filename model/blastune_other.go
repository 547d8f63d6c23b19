//go:build !cgo || purego

package model

// TuneBLAS does nothing without OpenBLAS.
func TuneBLAS() {}
