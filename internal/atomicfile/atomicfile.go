// Package atomicfile writes files and folders so that a reader sees either the old content or the complete new
// one, never a half-written file: write to a temporary name in the same directory, sync, then rename.
//
// Temporaries are named .NAME.tmp-PID-RANDOM, so that a later run can tell the leftovers of a killed process
// (kill -9, power loss) from the work of one still running: each Write and Dir first removes the stale
// temporaries of its own NAME, and RemoveStale clears a whole folder.
package atomicfile

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// tempPattern is the os.CreateTemp/MkdirTemp pattern for a temporary of base made by this process.
func tempPattern(base string) string {
	return "." + base + ".tmp-" + strconv.Itoa(os.Getpid()) + "-*"
}

// staleOwner parses a temporary's name: the base it stands for and whether the process that made it is gone.
func staleOwner(name string) (base string, stale, ok bool) {
	if !strings.HasPrefix(name, ".") {
		return "", false, false
	}
	i := strings.LastIndex(name, ".tmp-")
	if i <= 1 {
		return "", false, false
	}
	base = name[1:i]
	pid, _, _ := strings.Cut(name[i+len(".tmp-"):], "-")
	n, err := strconv.Atoi(pid)
	if err != nil || n <= 0 {
		return base, true, true // an older name without a pid: nobody can still be writing it
	}
	return base, n != os.Getpid() && !processAlive(n), true
}

// RemoveStale removes from dir the temporaries left by processes that no longer run; when base is not empty,
// only those of that name. A folder that was moved aside to be replaced (.NAME.tmp-…old) is put back when
// NAME is missing, since the replacement never arrived. It returns the names it removed or restored.
func RemoveStale(dir, base string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var done []string
	for _, e := range ents {
		b, stale, ok := staleOwner(e.Name())
		if !ok || !stale || (base != "" && b != base) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if strings.HasSuffix(e.Name(), ".old") {
			final := filepath.Join(dir, b)
			if _, err := os.Lstat(final); os.IsNotExist(err) && os.Rename(p, final) == nil {
				done = append(done, e.Name())
				continue
			}
		}
		if os.RemoveAll(p) == nil {
			done = append(done, e.Name())
		}
	}
	return done
}

// Write creates path atomically with the bytes fill writes. On any error the temporary file is removed.
func Write(path string, fill func(w *bufio.Writer) error) (err error) {
	dir := filepath.Dir(path)
	RemoveStale(dir, filepath.Base(path))
	tmp, err := os.CreateTemp(dir, tempPattern(filepath.Base(path)))
	if err != nil {
		return fmt.Errorf("create temp for %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	w := bufio.NewWriterSize(tmp, 1<<20)
	if err = fill(w); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = w.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = tmp.Chmod(0o644); err != nil { // CreateTemp makes 0600; outputs are shared model files
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename into %s: %w", path, err)
	}
	return nil
}

// WriteBytes creates path atomically with content b.
func WriteBytes(path string, b []byte) error {
	return Write(path, func(w *bufio.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

// TempDir makes a temporary folder beside final, named as this package names temporaries (so the next TempDir
// for the same final removes it if this process dies before removing it itself). The caller removes it.
func TempDir(final string) (string, error) {
	parent := filepath.Dir(final)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", parent, err)
	}
	RemoveStale(parent, filepath.Base(final))
	tmp, err := os.MkdirTemp(parent, tempPattern(filepath.Base(final)))
	if err != nil {
		return "", fmt.Errorf("create temp folder for %s: %w", final, err)
	}
	return tmp, nil
}

// Dir builds a folder at final: fill writes into a fresh temporary sibling folder, which is renamed to final
// only when fill succeeds. An existing final folder is replaced (moved aside, then removed). On failure nothing
// appears at final.
func Dir(final string, fill func(tmp string) error) (err error) {
	parent := filepath.Dir(final)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", parent, err)
	}
	RemoveStale(parent, filepath.Base(final))
	tmp, err := os.MkdirTemp(parent, tempPattern(filepath.Base(final)))
	if err != nil {
		return fmt.Errorf("create temp folder for %s: %w", final, err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err = fill(tmp); err != nil {
		return err
	}
	if err = os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	var old string
	if _, statErr := os.Stat(final); statErr == nil {
		old = tmp + ".old"
		if err = os.Rename(final, old); err != nil {
			return fmt.Errorf("move aside %s: %w", final, err)
		}
	}
	if err = os.Rename(tmp, final); err != nil {
		if old != "" {
			os.Rename(old, final)
		}
		return fmt.Errorf("rename into %s: %w", final, err)
	}
	if old != "" {
		os.RemoveAll(old)
	}
	return nil
}
