//go:build !unix

package atomicfile

// processAlive cannot tell here, so every temporary with a pid is treated as another run's work in progress.
func processAlive(int) bool { return true }
