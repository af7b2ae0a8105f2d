package quant

import "golang.org/x/sys/unix"

// cpuTime returns the CPU time (user+system) of the calling thread (self=false) or process, in seconds.
func cpuTime(self bool) float64 {
	var ru unix.Rusage
	who := unix.RUSAGE_THREAD
	if !self {
		var ts unix.Timespec
		if unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts) == nil {
			return float64(ts.Nano()) / 1e9
		}
	}
	if self {
		who = unix.RUSAGE_SELF
	}
	if unix.Getrusage(who, &ru) != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
