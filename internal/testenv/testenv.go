// Package testenv locates the test data: the small real data committed under testdata/ at the module root
// (Testdata), and the large shared read-only data LORAKIT_SHARED names (Shared, Dir). Tests that need the shared
// data skip without it, and Main says in one line per package which ones did.
package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
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
	if root := moduleRoot(); root != "" {
		return filepath.Join(root, dir)
	}
	return dir
}

// moduleRoot is the nearest folder above the working directory that holds go.mod, or "".
func moduleRoot() string {
	wd, err := os.Getwd()
	if err != nil {
		return ""
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return ""
		}
	}
}

// Testdata returns the module's testdata folder: stories260K (f32 and bf16) and its goldens, a copy of part of
// the shared data laid out as it is (models/stories260K, golden/stories260K-greedy.jsonl, ...), so that the
// tests using them run on a fresh clone. It fails t when the folder is missing.
func Testdata(t testing.TB) string {
	t.Helper()
	root := moduleRoot()
	if root == "" {
		t.Fatal("testenv: no go.mod above the working directory")
	}
	d := filepath.Join(root, "testdata")
	if _, err := os.Stat(filepath.Join(d, "models", "stories260K")); err != nil {
		t.Fatalf("testenv: the repository's test data is missing: %v", err)
	}
	return d
}

// Dir is Shared for a test: it skips t when LORAKIT_SHARED is unset and fails it when the variable is set
// but sub (e.g. "golden") is missing below it, as the project's tests treat shared data.
func Dir(t testing.TB, sub string) string {
	t.Helper()
	d := Shared()
	if d == "" {
		SkipWithoutShared(t)
	}
	if _, err := os.Stat(filepath.Join(d, sub)); err != nil {
		t.Fatalf("LORAKIT_SHARED=%s: %v", d, err)
	}
	return d
}

// SkipWithoutShared skips t, which needs the shared data, and records it for Main's summary.
func SkipWithoutShared(t testing.TB) {
	t.Helper()
	skipped.Lock()
	skipped.names = append(skipped.names, t.Name())
	skipped.Unlock()
	t.Skip("LORAKIT_SHARED not set")
}

// skipped lists the tests of this test binary that SkipWithoutShared skipped.
var skipped struct {
	sync.Mutex
	names []string
}

// Main runs a package's tests (call it from TestMain) and then, when some were skipped for want of
// LORAKIT_SHARED, says so in one line. `go test ./...` shows nothing of a passing package but its "ok" line,
// so without -v the line goes to the go command's own standard error where the system lets a test reach it
// (Linux /proc); elsewhere, and with -v, to standard output.
func Main(m *testing.M) {
	code := m.Run()
	skipped.Lock()
	names := append([]string(nil), skipped.names...)
	skipped.Unlock()
	if len(names) > 0 {
		announce(summary(names))
	}
	os.Exit(code)
}

// summary is the one line Main prints: the package, the count and the top-level test names.
func summary(names []string) string {
	top := map[string]bool{}
	for _, n := range names {
		top[strings.SplitN(n, "/", 2)[0]] = true
	}
	list := make([]string, 0, len(top))
	for n := range top {
		list = append(list, n)
	}
	sort.Strings(list)
	pkg, _ := os.Getwd()
	if root := moduleRoot(); root != "" {
		if rel, err := filepath.Rel(root, pkg); err == nil {
			pkg = rel
		}
	}
	noun := "tests"
	if len(list) == 1 {
		noun = "test"
	}
	return fmt.Sprintf("%s: %d %s skipped without LORAKIT_SHARED (the large shared data, e.g. LORAKIT_SHARED=../shared): %s",
		filepath.ToSlash(pkg), len(list), noun, strings.Join(list, ", "))
}

// announce writes line where `go test` shows it without -v: the go command's standard error when that is a
// terminal or a pipe (a regular file is left alone: appending through a second descriptor would interleave
// with, and be overwritten by, the go command's own writes).
func announce(line string) {
	if !testing.Verbose() {
		parent := fmt.Sprintf("/proc/%d/", os.Getppid())
		comm, err := os.ReadFile(parent + "comm")
		fi, serr := os.Stat(parent + "fd/2")
		if err == nil && serr == nil && strings.TrimSpace(string(comm)) == "go" && !fi.Mode().IsRegular() {
			if f, err := os.OpenFile(parent+"fd/2", os.O_WRONLY|os.O_APPEND, 0); err == nil {
				fmt.Fprintln(f, line)
				f.Close()
				return
			}
		}
	}
	fmt.Println(line)
}
