// Package testenv locates the shared read-only test data named by LORAKIT_SHARED.
package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// Shared returns the folder LORAKIT_SHARED names, or "" when it is unset. `go test` runs each package in its
// own folder, so a relative value (LORAKIT_SHARED=../shared typed at the repository root) is resolved against
// the module root — the nearest folder above the working directory that holds go.mod.
func Shared() string {
	dir := os.Getenv("LORAKIT_SHARED")
	if dir == "" || filepath.IsAbs(dir) {
		return dir
	}
	wd, err := os.Getwd()
	if err != nil {
		return dir
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return filepath.Join(d, dir)
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}

// Dir is Shared for a test: it skips t when LORAKIT_SHARED is unset and fails it when the variable is set
// but sub (e.g. "golden") is missing below it, as the project's tests treat shared data.
func Dir(t testing.TB, sub string) string {
	t.Helper()
	d := Shared()
	if d == "" {
		t.Skip("LORAKIT_SHARED not set")
	}
	if _, err := os.Stat(filepath.Join(d, sub)); err != nil {
		t.Fatalf("LORAKIT_SHARED=%s: %v", d, err)
	}
	return d
}
