package engine

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestFIFOWeightsAreNotOpened: a FIFO named adapter_model.safetensors is refused without opening it (an open
// would block forever), and the failure is remembered.
func TestFIFOWeightsAreNotOpened(t *testing.T) {
	dir := t.TempDir()
	ad := mkAdapter(t, filepath.Join(dir, "fifo"))
	if err := syscall.Mkfifo(filepath.Join(ad, "adapter_model.safetensors"), 0o644); err != nil {
		t.Skipf("no FIFOs here: %v", err)
	}
	var loads atomic.Int32
	r := newReg(t, RegistryConfig{Dir: dir}, &loads)
	done := make(chan error, 1)
	go func() { _, err := r.Acquire(context.Background(), "fifo"); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("FIFO weights: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("loading an adapter whose weights are a FIFO hangs")
	}
	if loads.Load() != 0 {
		t.Fatal("the load function ran on a FIFO")
	}
	if err := r.Load("x", ad); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("load API: %v", err)
	}
}

// TestFailedLoadsAreRemembered: requests naming a broken --adapter-dir adapter do not each load it again, until
// the TTL passes or its files change.
func TestFailedLoadsAreRemembered(t *testing.T) {
	dir := t.TempDir()
	bad := mkAdapter(t, filepath.Join(dir, "bad"))
	var loads atomic.Int32
	r := newReg(t, RegistryConfig{Dir: dir, FailureTTL: 300 * time.Millisecond}, &loads)
	for range 5 {
		if _, err := r.Acquire(context.Background(), "bad"); err == nil || !strings.Contains(err.Error(), "shape mismatch") {
			t.Fatal(err)
		}
	}
	if n := loads.Load(); n != 1 {
		t.Fatalf("%d loads for 5 requests", n)
	}
	if r.Failure("bad") == nil || r.Failure("other") != nil {
		t.Fatal("Failure")
	}
	// A changed file is tried again at once.
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(filepath.Join(bad, "adapter_config.json"), later, later); err != nil {
		t.Fatal(err)
	}
	r.Acquire(context.Background(), "bad")
	if n := loads.Load(); n != 2 {
		t.Fatalf("after a change: %d loads", n)
	}
	time.Sleep(400 * time.Millisecond) // past the TTL
	r.Acquire(context.Background(), "bad")
	if n := loads.Load(); n != 3 {
		t.Fatalf("after the TTL: %d loads", n)
	}
}
