//go:build !linux

package merge

// peakRSS is not measured on this platform.
func peakRSS() int64 { return 0 }
