package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Registry errors.
var (
	ErrAdapterNotFound = errors.New("adapter not found")
	ErrPathNotAllowed  = errors.New("adapter path not allowed")
)

// LoadFunc loads the adapter folder at path and checks it against the base model (shapes, rank).
type LoadFunc func(path string) (Delta, error)

// RegistryConfig configures a Registry.
type RegistryConfig struct {
	Load LoadFunc
	// Dir, if set, is searched for adapters named in requests (Dir/<name>/), loaded on first use.
	Dir string
	// MaxLoaded bounds how many adapters stay loaded; the least recently used idle adapters loaded from Dir are
	// evicted beyond it. 0 = unlimited.
	MaxLoaded int
	// AllowAnyPath lets the load API read adapters outside Dir and the startup paths.
	AllowAnyPath bool
	// Observer, if set, is told of every load and eviction (for /metrics).
	Observer RegistryObserver
	// Resolve, if set, turns a load API path that is not a local path (a hub id ORG/NAME[@REV], an s3:// URL)
	// into a local folder, kept until release is called. Such paths are loaded only with AllowAnyPath or when
	// they start with RemotePrefix.
	Resolve func(ctx context.Context, ref string) (dir string, release func(), err error)
	// Fetch, if set, finds adapters named in requests (in place of Dir): it returns a local folder, kept until
	// release is called, or an error wrapping ErrAdapterNotFound.
	Fetch func(ctx context.Context, name string) (dir string, release func(), err error)
	// FailureTTL is how long a failed load from Dir is remembered, so requests naming a broken adapter do not
	// each repeat the load (default DefaultFailureTTL; forgotten sooner when the folder's files change).
	FailureTTL time.Duration
	// RemotePrefix is where Fetch looks (e.g. "s3://bucket/adapters/"): load API paths under it are allowed.
	RemotePrefix string
}

// RegistryObserver is told what the registry does. Its methods may be called from several goroutines at once,
// AdapterEvicted with the registry locked: they must not call back into the Registry.
type RegistryObserver interface {
	// AdapterLoaded reports one call of the load function: how long it took and its error (nil on success).
	AdapterLoaded(name string, took time.Duration, err error)
	// AdapterEvicted reports an idle adapter dropped to stay within MaxLoaded.
	AdapterEvicted(name string)
}

// AdapterInfo describes a loaded adapter.
type AdapterInfo struct {
	Name, Path string
	Created    time.Time
	Refs       int
	Lazy       bool // loaded from Dir on demand (evictable)
}

type entry struct {
	name, path string
	delta      Delta
	refs       int
	created    time.Time
	lastUse    time.Time
	lazy       bool
	removed    bool
	idle       chan struct{} // closed when removed and refs reach 0
}

type loadCall struct {
	done chan struct{}
	err  error
}

// Registry maps adapter names to loaded adapters with reference counts.
type Registry struct {
	cfg     RegistryConfig
	mu      sync.Mutex
	byName  map[string]*entry
	loading map[string]*loadCall
	allowed map[string]bool // startup adapter paths (cleaned, absolute)
	dirAbs  string
	// failures are failed --adapter-dir loads by name (adapterfiles.go).
	failures map[string]failure
}

// NewRegistry makes an empty registry.
func NewRegistry(cfg RegistryConfig) (*Registry, error) {
	if cfg.Load == nil {
		return nil, errors.New("engine: RegistryConfig.Load is required")
	}
	r := &Registry{cfg: cfg, byName: map[string]*entry{}, loading: map[string]*loadCall{}, allowed: map[string]bool{},
		failures: map[string]failure{}}
	if cfg.Dir != "" {
		d, err := canonical(cfg.Dir)
		if err != nil {
			return nil, fmt.Errorf("adapter dir %s: %w", cfg.Dir, err)
		}
		st, err := os.Stat(d)
		if err != nil {
			return nil, fmt.Errorf("adapter dir: %w", err)
		}
		if !st.IsDir() {
			return nil, fmt.Errorf("adapter dir %s is not a directory", cfg.Dir)
		}
		r.dirAbs = d
	}
	return r, nil
}

func canonical(p string) (string, error) {
	a, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	if e, err := filepath.EvalSymlinks(a); err == nil {
		a = e
	}
	return filepath.Clean(a), nil
}

// ValidName reports whether name can name an adapter (and a folder under Dir).
func ValidName(name string) bool {
	if name == "" || len(name) > 256 || name == "." || name == ".." || strings.HasPrefix(name, ".") {
		return false
	}
	return !strings.ContainsAny(name, "/\\\x00")
}

// Add loads a startup adapter (its path becomes allowed; it is never evicted).
func (r *Registry) Add(name, path string) error {
	if !ValidName(name) {
		return fmt.Errorf("adapter name %q is not valid", name)
	}
	abs, err := canonical(path)
	if err != nil {
		return fmt.Errorf("adapter %s: %w", name, err)
	}
	r.mu.Lock()
	r.allowed[abs] = true
	r.mu.Unlock()
	_, err = r.install(name, path, false, false)
	return err
}

// Load loads (or atomically replaces) the adapter name from path, for the runtime load API.
func (r *Registry) Load(name, path string) error {
	if !ValidName(name) {
		return fmt.Errorf("adapter name %q is not valid (no '/', no leading '.')", name)
	}
	if _, err := os.Stat(path); err != nil && r.cfg.Resolve != nil && remote(path) {
		under := r.cfg.RemotePrefix != "" && strings.HasPrefix(path, r.cfg.RemotePrefix) && !strings.Contains(path, "..")
		if !r.cfg.AllowAnyPath && !under {
			return fmt.Errorf("%w: %s is not a local folder; remote adapters outside --adapter-dir load only with --allow-any-adapter-path", ErrPathNotAllowed, path)
		}
		ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
		defer cancel()
		dir, release, err := r.cfg.Resolve(ctx, path)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrAdapterNotFound, err)
		}
		defer release()
		_, err = r.install(name, dir, false, false)
		return err
	}
	if !r.cfg.AllowAnyPath {
		abs, err := canonical(path)
		if err != nil {
			return fmt.Errorf("adapter path %s: %w", path, err)
		}
		r.mu.Lock()
		ok := r.allowed[abs] || (r.dirAbs != "" && within(r.dirAbs, abs))
		r.mu.Unlock()
		if !ok {
			return fmt.Errorf("%w: %s is outside --adapter-dir and the startup adapters (start the server with --allow-any-adapter-path to allow it)", ErrPathNotAllowed, path)
		}
	}
	_, err := r.install(name, path, false, false)
	return err
}

// remote reports whether a path that is not on disk names a remote adapter (a URL, or a hub id: relative, not
// starting with ".").
func remote(p string) bool {
	return strings.Contains(p, "://") || (!filepath.IsAbs(p) && !strings.HasPrefix(p, "."))
}

func within(dir, p string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

// install loads path outside the lock, then swaps it in under name (leased once when acquire is set).
func (r *Registry) install(name, path string, lazy, acquire bool) (*Lease, error) {
	if st, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrAdapterNotFound, path, err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("%w: %s is not a directory", ErrAdapterNotFound, path)
	}
	if err := CheckFiles(path); err != nil {
		return nil, fmt.Errorf("adapter %s (%s): %w", name, path, err)
	}
	t0 := time.Now()
	d, err := r.cfg.Load(path)
	if r.cfg.Observer != nil {
		r.cfg.Observer.AdapterLoaded(name, time.Since(t0), err)
	}
	if err != nil {
		return nil, fmt.Errorf("adapter %s (%s): %w", name, path, err)
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if old := r.byName[name]; old != nil {
		r.retire(old)
	}
	e := &entry{name: name, path: path, delta: d, created: now, lastUse: now, lazy: lazy, idle: make(chan struct{})}
	r.byName[name] = e
	var l *Lease
	if acquire {
		e.refs++
		l = &Lease{r: r, e: e}
	}
	r.evict()
	return l, nil
}

// retire removes e from the map; in-flight leases keep using it. r.mu held.
func (r *Registry) retire(e *entry) {
	e.removed = true
	if r.byName[e.name] == e {
		delete(r.byName, e.name)
	}
	if e.refs == 0 {
		close(e.idle)
	}
}

// evict drops least-recently-used idle lazy adapters beyond MaxLoaded. r.mu held.
func (r *Registry) evict() {
	if r.cfg.MaxLoaded <= 0 {
		return
	}
	for len(r.byName) > r.cfg.MaxLoaded {
		var lru *entry
		for _, e := range r.byName {
			if e.lazy && e.refs == 0 && (lru == nil || e.lastUse.Before(lru.lastUse)) {
				lru = e
			}
		}
		if lru == nil {
			return
		}
		r.retire(lru)
		if r.cfg.Observer != nil {
			r.cfg.Observer.AdapterEvicted(lru.name)
		}
	}
}

// Unload removes name; new requests no longer find it. It waits until in-flight requests on it have finished
// (or ctx ends; the adapter is gone either way).
func (r *Registry) Unload(ctx context.Context, name string) error {
	r.mu.Lock()
	e := r.byName[name]
	if e == nil {
		r.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrAdapterNotFound, name)
	}
	r.retire(e)
	r.mu.Unlock()
	select {
	case <-e.idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Lease is a reference to a loaded adapter; Release it when the request is done.
type Lease struct {
	r    *Registry
	e    *entry
	once sync.Once
}

// Delta is the leased adapter.
func (l *Lease) Delta() Delta { return l.e.delta }

// Path is where the adapter was loaded from.
func (l *Lease) Path() string { return l.e.path }

// Release drops the reference. Safe to call more than once.
func (l *Lease) Release() {
	l.once.Do(func() {
		l.r.mu.Lock()
		l.e.refs--
		l.e.lastUse = time.Now()
		if l.e.refs == 0 && l.e.removed {
			close(l.e.idle)
		}
		if l.e.refs == 0 {
			r := l.r
			r.evict()
		}
		l.r.mu.Unlock()
	})
}

// Acquire leases the adapter name, loading it from Dir on first use. ErrAdapterNotFound if unknown.
func (r *Registry) Acquire(ctx context.Context, name string) (*Lease, error) {
	for {
		r.mu.Lock()
		if e := r.byName[name]; e != nil {
			e.refs++
			e.lastUse = time.Now()
			r.mu.Unlock()
			return &Lease{r: r, e: e}, nil
		}
		if (r.dirAbs == "" && r.cfg.Fetch == nil) || !ValidName(name) {
			r.mu.Unlock()
			return nil, fmt.Errorf("%w: %s", ErrAdapterNotFound, name)
		}
		if c := r.loading[name]; c != nil {
			r.mu.Unlock()
			select {
			case <-c.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if c.err != nil {
				return nil, c.err
			}
			continue
		}
		if r.cfg.Fetch == nil {
			if _, err := os.Stat(filepath.Join(r.dirAbs, name, "adapter_config.json")); err != nil {
				r.mu.Unlock()
				return nil, fmt.Errorf("%w: %s", ErrAdapterNotFound, name)
			}
			if err := r.failed(name, filepath.Join(r.dirAbs, name)); err != nil {
				r.mu.Unlock()
				return nil, err
			}
		}
		c := &loadCall{done: make(chan struct{})}
		r.loading[name] = c
		r.mu.Unlock()
		st := ""
		if r.cfg.Fetch == nil {
			st = stamp(filepath.Join(r.dirAbs, name))
		}
		l, err := r.loadLazy(ctx, name)
		c.err = err
		r.mu.Lock()
		if err != nil && r.cfg.Fetch == nil && !errors.Is(err, ErrAdapterNotFound) {
			r.failures[name] = failure{err: err, at: time.Now(), stamp: st}
		}
		delete(r.loading, name)
		r.mu.Unlock()
		close(c.done)
		return l, err
	}
}

// fetchTimeout bounds one remote fetch, which no single client's disconnect may cancel (others may wait on it).
const fetchTimeout = 10 * time.Minute

// loadLazy loads name from Dir or through Fetch, leased once.
func (r *Registry) loadLazy(ctx context.Context, name string) (*Lease, error) {
	if r.cfg.Fetch == nil {
		return r.install(name, filepath.Join(r.dirAbs, name), true, true)
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fetchTimeout)
	defer cancel()
	dir, release, err := r.cfg.Fetch(fctx, name)
	if err != nil {
		return nil, err
	}
	defer release()
	return r.install(name, dir, true, true)
}

// Has reports whether name is loaded or loadable from Dir.
func (r *Registry) Has(name string) bool {
	r.mu.Lock()
	_, ok := r.byName[name]
	r.mu.Unlock()
	return ok
}

// List returns the loaded adapters sorted by name.
func (r *Registry) List() []AdapterInfo {
	r.mu.Lock()
	out := make([]AdapterInfo, 0, len(r.byName))
	for _, e := range r.byName {
		out = append(out, AdapterInfo{Name: e.name, Path: e.path, Created: e.created, Refs: e.refs, Lazy: e.lazy})
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// MaxLoaded is RegistryConfig.MaxLoaded (0 = unlimited).
func (r *Registry) MaxLoaded() int { return r.cfg.MaxLoaded }

// Len is the number of loaded adapters.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byName)
}
