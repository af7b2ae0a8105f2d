// Package atomicfile writes files and folders so that a reader sees either the old content or the complete new
// one, never a half-written file: write to a temporary name in the same directory, sync, then rename.
package atomicfile

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
)

// Write creates path atomically with the bytes fill writes. On any error the temporary file is removed.
func Write(path string, fill func(w *bufio.Writer) error) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
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

// Dir builds a folder at final: fill writes into a fresh temporary sibling folder, which is renamed to final
// only when fill succeeds. An existing final folder is replaced (moved aside, then removed). On failure nothing
// appears at final.
func Dir(final string, fill func(tmp string) error) (err error) {
	parent := filepath.Dir(final)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", parent, err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(final)+".tmp-*")
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
