// Package testenv locates the test data: the small real data committed under testdata/ at the module root
// (Testdata), and the large shared read-only data LORAKIT_SHARED names (Shared, Dir). Tests that need the shared
// data skip without it, and Main says which ones did.
package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
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
// LORAKIT_SHARED, names them in one line on standard output (shown with -v, or when the package fails). `go test
// ./...` shows nothing else of a passing package, so the first package of a `go test` run that skips anything
// also says once, on the terminal when there is one, that tests were skipped and how to run them.
func Main(m *testing.M) {
	code := m.Run()
	skipped.Lock()
	names := append([]string(nil), skipped.names...)
	skipped.Unlock()
	if len(names) > 0 {
		fmt.Println(summary(names))
		if !testing.Verbose() && firstInRun(os.TempDir(), os.Getppid(), time.Now()) {
			toTerminal(runNotice)
		}
	}
	os.Exit(code)
}

// runNotice is the line a `go test` run shows once when tests were skipped without the shared data.
const runNotice = "go test: tests that need the large shared data were skipped (LORAKIT_SHARED is not set, e.g. LORAKIT_SHARED=../shared go test ./...); go test -v names them"

// firstInRun reports whether this is the first test binary of the go command run (process id run) to ask: it
// creates a marker file in dir, which later binaries of the same run find. Markers of runs older than a day are
// removed.
func firstInRun(dir string, run int, now time.Time) bool {
	const prefix = "lorakit-test-skips-"
	if old, err := filepath.Glob(filepath.Join(dir, prefix+"*")); err == nil {
		for _, p := range old {
			if st, err := os.Stat(p); err == nil && now.Sub(st.ModTime()) > 24*time.Hour {
				os.Remove(p)
			}
		}
	}
	f, err := os.OpenFile(filepath.Join(dir, prefix+strconv.Itoa(run)), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// toTerminal writes line to the controlling terminal, if there is one (go test keeps a passing package's own
// output to itself).
func toTerminal(line string) {
	tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0)
	if err != nil {
		return
	}
	fmt.Fprintln(tty, line)
	tty.Close()
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
