package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStartProfileKeepsOtherFiles checks that --cpuprofile refuses a path holding something other than a profile
// (the file is left as it was), and writes a profile to a new path and over an earlier profile.
func TestStartProfileKeepsOtherFiles(t *testing.T) {
	dir := t.TempDir()
	notes := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(notes, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := startProfile(notes); err == nil || !strings.Contains(err.Error(), "not a CPU profile") {
		t.Fatalf("startProfile over a text file: err = %v, want a refusal", err)
	}
	if b, _ := os.ReadFile(notes); string(b) != "mine" {
		t.Fatalf("the refused file changed: %q", b)
	}
	prof := filepath.Join(dir, "cpu.prof")
	for range 2 { // a new path, then over the profile just written
		stop, err := startProfile(prof)
		if err != nil {
			t.Fatal(err)
		}
		stop()
		b, err := os.ReadFile(prof)
		if err != nil || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
			t.Fatalf("profile not written as gzip data: %d bytes, err %v", len(b), err)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Fatalf("%d entries in the folder, want notes.txt and cpu.prof only (no temporaries)", len(entries))
	}
}
