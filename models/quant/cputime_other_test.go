//go:build !linux

package quant

func cpuTime(self bool) float64 { return 0 }
