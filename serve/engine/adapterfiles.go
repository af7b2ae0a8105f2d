package engine

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Files of a PEFT adapter folder the registry checks before loading.
var adapterFiles = []string{"adapter_config.json", "adapter_model.safetensors"}

// CheckFiles refuses an adapter folder whose files are not regular files: a FIFO or a device named
// adapter_model.safetensors would block or stream forever once opened. A missing weights file is left to the
// load function, which says what is there instead.
func CheckFiles(dir string) error {
	for _, f := range adapterFiles {
		st, err := os.Stat(filepath.Join(dir, f))
		if errors.Is(err, os.ErrNotExist) && f != adapterFiles[0] {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file (%v)", f, st.Mode().Type())
		}
	}
	return nil
}

// stamp identifies the version of an adapter folder's files (size and modification time of each).
func stamp(dir string) string {
	s := ""
	for _, f := range adapterFiles {
		if st, err := os.Stat(filepath.Join(dir, f)); err == nil {
			s += fmt.Sprintf("%d/%d;", st.Size(), st.ModTime().UnixNano())
		}
	}
	return s
}

// failure is a failed load of an --adapter-dir adapter, remembered so that every request naming it does not
// repeat the work; it is forgotten after FailureTTL or as soon as the folder's files change.
type failure struct {
	err   error
	at    time.Time
	stamp string
}

// DefaultFailureTTL is how long a failed --adapter-dir load is remembered (RegistryConfig.FailureTTL).
const DefaultFailureTTL = 30 * time.Second

// failed returns the remembered failure of loading name from dir, if it still stands. r.mu held.
func (r *Registry) failed(name, dir string) error {
	f, ok := r.failures[name]
	if !ok {
		return nil
	}
	if time.Since(f.at) > r.failureTTL() || stamp(dir) != f.stamp {
		delete(r.failures, name)
		return nil
	}
	return f.err
}

func (r *Registry) failureTTL() time.Duration {
	if r.cfg.FailureTTL > 0 {
		return r.cfg.FailureTTL
	}
	return DefaultFailureTTL
}

// Failure is the remembered error of loading name from --adapter-dir, or nil (for /v1/models).
func (r *Registry) Failure(name string) error {
	if r.dirAbs == "" {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed(name, filepath.Join(r.dirAbs, name))
}
