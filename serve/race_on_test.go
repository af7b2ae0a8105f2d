//go:build race

package serve

// slow scales time bounds in tests: the race detector makes JSON scanning about ten times slower.
const slow = 15
