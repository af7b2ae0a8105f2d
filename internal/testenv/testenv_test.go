package testenv

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSharedRelativeToModuleRoot(t *testing.T) {
	t.Setenv("LORAKIT_SHARED", "")
	if got := Shared(); got != "" {
		t.Fatalf("unset: %q", got)
	}
	t.Setenv("LORAKIT_SHARED", "/abs/shared")
	if got := Shared(); got != "/abs/shared" {
		t.Fatalf("absolute: %q", got)
	}
	t.Setenv("LORAKIT_SHARED", "../shared")
	wd, _ := os.Getwd()
	root := filepath.Dir(filepath.Dir(wd)) // internal/testenv → module root
	if got := Shared(); got != filepath.Join(root, "../shared") {
		t.Fatalf("relative: %q, want it under %s", got, root)
	}
}

// TestTestdataIsSharedCopy checks that testdata/ is an unedited copy of the shared data it was taken from.
func TestTestdataIsSharedCopy(t *testing.T) {
	td := Testdata(t)
	sh := Dir(t, "golden")
	n := 0
	err := filepath.WalkDir(td, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || p == filepath.Join(td, "README.md") {
			return err
		}
		rel, _ := filepath.Rel(td, p)
		got, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		want, err := os.ReadFile(filepath.Join(sh, rel))
		if err != nil {
			return err
		}
		if !bytes.Equal(got, want) {
			t.Errorf("testdata/%s differs from its original in LORAKIT_SHARED", rel)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 17 {
		t.Errorf("compared %d files, want the 17 copied ones", n)
	}
}

func TestSummary(t *testing.T) {
	got := summary([]string{"TestB/x", "TestA", "TestB/y"})
	if want := "internal/testenv: 2 tests skipped"; !strings.HasPrefix(got, want) || !strings.HasSuffix(got, ": TestA, TestB") {
		t.Errorf("summary = %q, want %q... ending in the test names", got, want)
	}
}

func TestFirstInRun(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	if !firstInRun(dir, 4242, now) || firstInRun(dir, 4242, now) {
		t.Fatal("the first binary of a run must be told so, and only it")
	}
	if !firstInRun(dir, 4243, now) {
		t.Fatal("another run is first again")
	}
	// a day later the old markers are gone, so a reused process id is first again
	if !firstInRun(dir, 4242, now.Add(25*time.Hour)) {
		t.Fatal("stale marker kept")
	}
}
