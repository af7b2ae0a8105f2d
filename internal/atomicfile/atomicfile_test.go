package atomicfile

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// deadPID returns a pid that names no process (a child that has exited and been reaped).
func deadPID(t *testing.T) int {
	p, err := os.StartProcess("/bin/true", []string{"true"}, &os.ProcAttr{})
	if err != nil {
		t.Skip("no /bin/true:", err)
	}
	pid := p.Pid
	p.Wait()
	return pid
}

// TestStaleTemporaries: the next Dir of the same name removes what a killed run left (a kill -9 mid-write),
// leaves the temporaries of a live process and of other names alone, and puts back a folder that was moved
// aside when its replacement never arrived.
func TestStaleTemporaries(t *testing.T) {
	dir := t.TempDir()
	dead := strconv.Itoa(deadPID(t))
	live := strconv.Itoa(os.Getppid())
	mk := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(p, "w"), []byte("x"), 0o644)
		return p
	}
	stale := mk(".out.tmp-" + dead + "-123")
	other := mk(".other.tmp-" + dead + "-5")
	legacy := mk(".out.tmp-77777")       // the name before pids were recorded
	old := mk(".out.tmp-" + live + "-1") // a run in progress elsewhere
	if err := Dir(filepath.Join(dir, "out"), func(tmp string) error { return nil }); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{stale: false, legacy: false, old: true, other: true} {
		if _, err := os.Stat(p); (err == nil) != want {
			t.Errorf("%s: exists %v, want %v", filepath.Base(p), err == nil, want)
		}
	}
	// A replaced folder moved aside by a run killed before the rename: restored, not deleted.
	aside := mk(".kept.tmp-" + dead + "-4.old")
	if got := RemoveStale(dir, ""); len(got) != 2 {
		t.Errorf("RemoveStale: %v, want the .other and .kept leftovers", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "kept", "w")); err != nil || fileExists(aside) {
		t.Errorf("moved-aside folder not restored: %v", err)
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// TestWriteLeavesNoTemp: a failed fill leaves neither the output nor a temporary.
func TestWriteLeavesNoTemp(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f.json")
	if err := WriteBytes(p, []byte("ok")); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("left %d entries", len(ents))
	}
}
