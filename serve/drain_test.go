package serve

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestNaNAdapterEndsWithAnError: an adapter whose logits turn NaN ends the request with an error: a 500 with a
// message (not a JSON encoding failure) when not streamed, an error event and [DONE] when streamed.
func TestNaNAdapterEndsWithAnError(t *testing.T) {
	e := newEnv(t, nil)
	dir := writeFakeAdapter(t, filepath.Join(e.dir, "lib", "broken"), "")
	if err := os.WriteFile(filepath.Join(dir, "nan"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	st, b := e.post(t, "/v1/chat/completions", chatBody("broken", "x", `"logprobs":true,"top_logprobs":2`))
	wantError(t, st, b, 500, "non-finite")
	evs := e.stream(t, "/v1/chat/completions", chatBody("broken", "x", `"stream":true,"logprobs":true`))
	last := evs[len(evs)-1]
	if last.raw != "[DONE]" {
		t.Fatalf("stream does not end with [DONE]: %+v", evs)
	}
	if prev := evs[len(evs)-2].raw; !strings.Contains(prev, `"error"`) || !strings.Contains(prev, "non-finite") {
		t.Fatalf("no error event before [DONE]: %s", prev)
	}
}

// TestShutdownEndsStreamsProperly: on shutdown a stream still running at the deadline gets an error event and
// [DONE], a client that never reads does not hold the server, and Start returns nil.
func TestShutdownEndsStreamsProperly(t *testing.T) {
	fm := &fakeModel{done: make(chan struct{}), block: make(chan struct{})}
	defer close(fm.done)
	var logs bytes.Buffer
	var logMu sync.Mutex
	s, err := New(Config{Model: fm, ModelName: "base", ShutdownTimeout: 300 * time.Millisecond,
		WriteTimeout: 500 * time.Millisecond, Logger: slog.New(slog.NewJSONHandler(lockedWriter{&logs, &logMu}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan error, 1)
	go func() { started <- s.Start(ctx, ln) }()
	// Steps run slowly, so generations are still running at the deadline.
	go func() {
		for {
			select {
			case fm.block <- struct{}{}:
				time.Sleep(5 * time.Millisecond)
			case <-fm.done:
				return
			}
		}
	}()
	body := chatBody("base", "x", `"stream":true,"n":2,"ignore_eos":true,"max_tokens":400`)
	// A client that sends its request and never reads.
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	io.WriteString(silent, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "+
		itoa(len(body))+"\r\n\r\n"+body)
	resp, err := http.Post("http://"+addr+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil { // the stream has started
		t.Fatal(err)
	}
	t0 := time.Now()
	cancel() // SIGTERM
	rest, _ := io.ReadAll(br)
	if !strings.HasSuffix(string(rest), "data: [DONE]\n\n") || !strings.Contains(string(rest), "server_shutting_down") {
		t.Fatalf("stream cut without an error event and [DONE]: ...%s", tail(string(rest), 400))
	}
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("Start after a drain: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Start did not return")
	}
	if d := time.Since(t0); d > 3*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
	logMu.Lock()
	defer logMu.Unlock()
	if !strings.Contains(logs.String(), "requests cut at the deadline") {
		t.Fatalf("the cut is not logged:\n%s", logs.String())
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func itoa(n int) string { return strconv.Itoa(n) }

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestRequestAndAdapterLog: one JSON line per request with method, path, model, status, tokens and duration, and
// lines for adapter loads, failures and evictions.
func TestRequestAndAdapterLog(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	e := newEnv(t, func(c *Config, _ *fakeModel) {
		c.Logger = slog.New(slog.NewJSONHandler(lockedWriter{&buf, &mu}, nil))
		c.MaxLoadedAdapters = 3
	})
	writeFakeAdapter(t, filepath.Join(e.dir, "lib", "other"), "other")
	bad := writeFakeAdapter(t, filepath.Join(e.dir, "lib", "bad"), "")
	osWriteFile(filepath.Join(bad, "mismatch"), "shapes do not fit")
	e.post(t, "/v1/chat/completions", chatBody("lazy", "hi", ""))
	e.post(t, "/v1/chat/completions", chatBody("other", "hi", ""))
	e.post(t, "/v1/chat/completions", chatBody("bad", "hi", ""))
	e.get(t, "/health")
	mu.Lock()
	defer mu.Unlock()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not a JSON line: %q", l)
		}
		lines = append(lines, m)
	}
	find := func(msg, key, val string) map[string]any {
		for _, m := range lines {
			if m["msg"] == msg && (key == "" || m[key] == val) {
				return m
			}
		}
		t.Fatalf("no %q line with %s=%s in:\n%s", msg, key, val, buf.String())
		return nil
	}
	r := find("request", "model", "lazy")
	for _, k := range []string{"method", "path", "status", "duration_ms", "prompt_tokens", "completion_tokens"} {
		if _, ok := r[k]; !ok {
			t.Fatalf("request line lacks %s: %v", k, r)
		}
	}
	if r["status"] != float64(200) || r["path"] != "/v1/chat/completions" || r["completion_tokens"] != float64(12) {
		t.Fatalf("%v", r)
	}
	find("adapter loaded", "adapter", "lazy")
	find("adapter evicted", "adapter", "lazy")
	if f := find("adapter load failed", "adapter", "bad"); !strings.Contains(f["error"].(string), "shapes do not fit") {
		t.Fatal(f)
	}
	for _, m := range lines {
		if m["path"] == "/health" {
			t.Fatal("health probes are logged")
		}
	}
}

// TestModelsListOnlyLoadableAdapters: /v1/models leaves out --adapter-dir entries that cannot load (no weights,
// weights that are not a regular file, a recent failure), and errors name no server directory.
func TestModelsListOnlyLoadableAdapters(t *testing.T) {
	e := newEnv(t, nil)
	lib := filepath.Join(e.dir, "lib")
	nw := writeFakeAdapter(t, filepath.Join(lib, "noweights"), "")
	os.Remove(filepath.Join(nw, "adapter_model.safetensors"))
	fifo := writeFakeAdapter(t, filepath.Join(lib, "fifo"), "")
	os.Remove(filepath.Join(fifo, "adapter_model.safetensors"))
	if err := syscall.Mkfifo(filepath.Join(fifo, "adapter_model.safetensors"), 0o644); err != nil {
		t.Skipf("no FIFOs: %v", err)
	}
	bad := writeFakeAdapter(t, filepath.Join(lib, "bad"), "")
	osWriteFile(filepath.Join(bad, "mismatch"), "shapes do not fit")
	ids := func() string {
		_, b := e.get(t, "/v1/models")
		var l struct{ Data []struct{ ID string } }
		json.Unmarshal(b, &l)
		var out []string
		for _, d := range l.Data {
			out = append(out, d.ID)
		}
		return strings.Join(out, ",")
	}
	if got := ids(); got != "base,hello,shift,bad,lazy" {
		t.Fatalf("models %s", got)
	}
	st, b := e.post(t, "/v1/chat/completions", chatBody("bad", "x", ""))
	wantError(t, st, b, 400, "shapes do not fit")
	if strings.Contains(string(b), e.dir) {
		t.Fatalf("the error names a server directory: %s", b)
	}
	if got := ids(); got != "base,hello,shift,lazy" {
		t.Fatalf("after bad failed to load: %s", got)
	}
	st, b = e.post(t, "/v1/chat/completions", chatBody("fifo", "x", ""))
	wantError(t, st, b, 400, "not a regular file")
}
