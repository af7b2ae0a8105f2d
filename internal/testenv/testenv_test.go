package testenv

import (
	"os"
	"path/filepath"
	"testing"
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
