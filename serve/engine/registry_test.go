package engine

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

type pathDelta struct{ path string }

func (pathDelta) Apply(string, []float32, []float32, int, int) {}

func mkAdapter(t *testing.T, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "adapter_config.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func newReg(t *testing.T, cfg RegistryConfig, loads *atomic.Int32) *Registry {
	t.Helper()
	cfg.Load = func(p string) (Delta, error) {
		loads.Add(1)
		if filepath.Base(p) == "bad" {
			return nil, errors.New("shape mismatch: q_proj lora_A [4, 99] vs base in 64")
		}
		return pathDelta{p}, nil
	}
	r, err := NewRegistry(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRegistryUnloadWaitsAndReplace(t *testing.T) {
	root := t.TempDir()
	a1 := mkAdapter(t, filepath.Join(root, "a1"))
	a2 := mkAdapter(t, filepath.Join(root, "a2"))
	var loads atomic.Int32
	r := newReg(t, RegistryConfig{}, &loads)
	if err := r.Add("x", a1); err != nil {
		t.Fatal(err)
	}
	l, err := r.Acquire(context.Background(), "x")
	if err != nil {
		t.Fatal(err)
	}
	// a runtime load of a startup path is allowed; replacing keeps the old lease on the old adapter
	if err := r.Load("x", a1); err != nil {
		t.Fatal(err)
	}
	if err := r.Load("x", a2); err == nil || !errors.Is(err, ErrPathNotAllowed) {
		t.Fatalf("want path refusal, got %v", err)
	}
	if l.Delta().(pathDelta).path != a1 {
		t.Fatal("lease changed adapter")
	}
	l2, _ := r.Acquire(context.Background(), "x")
	done := make(chan error)
	go func() { done <- r.Unload(context.Background(), "x") }()
	select {
	case <-done:
		t.Fatal("unload returned while a request holds the adapter")
	case <-time.After(50 * time.Millisecond):
	}
	if _, err := r.Acquire(context.Background(), "x"); !errors.Is(err, ErrAdapterNotFound) {
		t.Fatalf("unloaded adapter still served: %v", err)
	}
	l.Release() // old version: does not gate the unload of the new one
	l2.Release()
	l2.Release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := r.Unload(context.Background(), "x"); !errors.Is(err, ErrAdapterNotFound) {
		t.Fatal(err)
	}
}

func TestRegistryLazyLRUAndPaths(t *testing.T) {
	root := t.TempDir()
	for _, n := range []string{"p", "q", "s", "bad"} {
		mkAdapter(t, filepath.Join(root, n))
	}
	outside := mkAdapter(t, filepath.Join(t.TempDir(), "o"))
	var loads atomic.Int32
	r := newReg(t, RegistryConfig{Dir: root, MaxLoaded: 2}, &loads)
	for _, n := range []string{"p", "q", "p", "s"} {
		l, err := r.Acquire(context.Background(), n)
		if err != nil {
			t.Fatal(err)
		}
		l.Release()
		time.Sleep(2 * time.Millisecond)
	}
	if loads.Load() != 3 {
		t.Fatalf("loads %d, want 3 (p cached)", loads.Load())
	}
	names := []string{}
	for _, a := range r.List() {
		names = append(names, a.Name)
	}
	if len(names) != 2 || names[0] != "p" || names[1] != "s" {
		t.Fatalf("after LRU eviction loaded = %v, want [p s]", names)
	}
	for _, n := range []string{"nope", "../p", ".hidden", ""} {
		if _, err := r.Acquire(context.Background(), n); !errors.Is(err, ErrAdapterNotFound) {
			t.Fatalf("%q: %v", n, err)
		}
	}
	if _, err := r.Acquire(context.Background(), "bad"); err == nil || errors.Is(err, ErrAdapterNotFound) {
		t.Fatalf("bad adapter: %v", err)
	}
	if err := r.Load("o", outside); !errors.Is(err, ErrPathNotAllowed) {
		t.Fatalf("outside path: %v", err)
	}
	if err := r.Load("inside", filepath.Join(root, "q")); err != nil {
		t.Fatal(err)
	}
	if err := r.Load("dotdot", filepath.Join(root, "..", filepath.Base(filepath.Dir(outside)), "o")); !errors.Is(err, ErrPathNotAllowed) {
		t.Fatalf("escape: %v", err)
	}
	any := newReg(t, RegistryConfig{AllowAnyPath: true}, &loads)
	if err := any.Load("o", outside); err != nil {
		t.Fatal(err)
	}
	if err := any.Load("missing", filepath.Join(root, "none")); !errors.Is(err, ErrAdapterNotFound) {
		t.Fatal(err)
	}
}

// TestRegistryResolvesRemotePaths: a load API path that is no local folder goes through Resolve, only when any
// path is allowed.
func TestRegistryResolvesRemotePaths(t *testing.T) {
	cached := mkAdapter(t, filepath.Join(t.TempDir(), "snapshot"))
	var asked []string
	resolve := func(_ context.Context, ref string) (string, func(), error) {
		asked = append(asked, ref)
		if ref == "acme/lora" {
			return cached, func() {}, nil
		}
		return "", nil, errors.New("no such repository")
	}
	var loads atomic.Int32
	r := newReg(t, RegistryConfig{Resolve: resolve}, &loads)
	if err := r.Load("x", "acme/lora"); !errors.Is(err, ErrPathNotAllowed) || len(asked) != 0 {
		t.Fatalf("without AllowAnyPath: %v (resolver asked %v)", err, asked)
	}
	r = newReg(t, RegistryConfig{Resolve: resolve, AllowAnyPath: true}, &loads)
	if err := r.Load("x", "acme/lora"); err != nil {
		t.Fatal(err)
	}
	l, err := r.Acquire(context.Background(), "x")
	if err != nil || l.Path() != cached {
		t.Fatalf("%v %v", l, err)
	}
	l.Release()
	if err := r.Load("y", "acme/nothing"); !errors.Is(err, ErrAdapterNotFound) {
		t.Fatalf("unresolvable: %v", err)
	}
}
