package serve

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lorakit/lorakit/internal/testenv"
	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/serve/backend"
)

// echoFlood is issue 14's request: echo, max_tokens 0, many short prompts and n 128 (a 447 MB+ reply before).
func echoFlood(prompts, n int) string {
	var b strings.Builder
	b.WriteString(`{"model":"base","echo":true,"max_tokens":0,"n":` + strconv.Itoa(n) + `,"prompt":[`)
	for i := range prompts {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"ab"`)
	}
	b.WriteString("]}")
	return b.String()
}

func TestEchoIsAdmittedLikeGeneration(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *fakeModel) { c.MaxBodyBytes = 1 << 20 })
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	for _, n := range []int{128, 1} {
		st, b := e.post(t, "/v1/completions", echoFlood(100000, n))
		if er := wantError(t, st, b, 400, "at most 256 prompts"); er["param"] != "prompt" {
			t.Fatalf("param %v", er["param"])
		}
	}
	st, b := e.post(t, "/v1/completions", echoFlood(3, 128))
	if er := wantError(t, st, b, 400, "384 choices"); er["param"] != "n" {
		t.Fatalf("param %v", er["param"])
	}
	if d := time.Since(start); d > slow*3*time.Second {
		t.Fatalf("refusing took %v", d)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	t.Logf("refusing allocated %d KB", (after.TotalAlloc-before.TotalAlloc)>>10)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
		t.Fatalf("refusing allocated %d MB", grew>>20)
	}
	// Within the bounds echo works, n copies per prompt; the echoed bytes are bounded too.
	st, b = e.post(t, "/v1/completions", echoFlood(3, 2))
	if st != 200 || len(decode(t, b)["choices"].([]any)) != 6 {
		t.Fatalf("%d %s", st, b)
	}
	long := `{"model":"base","echo":true,"max_tokens":0,"prompt":"` + strings.Repeat("x", 600) + `"}`
	st, b = e.post(t, "/v1/completions", long)
	if er := wantError(t, st, b, 400, "context length"); er["param"] != "prompt" {
		t.Fatalf("an over-long echo prompt: %v", er)
	}
	st, b = e.post(t, "/v1/completions", `{"model":"base","max_tokens":1,"n":2,"prompt":[[1,2],[3]]}`)
	if st != 200 {
		t.Fatalf("%d %s", st, b)
	}
}

func TestMaxN(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *fakeModel) { c.MaxN = 4 })
	st, b := e.post(t, "/v1/chat/completions", chatBody("base", "x", `"n":5,"max_tokens":1`))
	if er := wantError(t, st, b, 400, "--max-n"); er["param"] != "n" {
		t.Fatal(er)
	}
	if st, b := e.post(t, "/v1/chat/completions", chatBody("base", "x", `"n":4,"max_tokens":1`)); st != 200 {
		t.Fatalf("%d %s", st, b)
	}
}

// rss is the process's resident set in bytes (0 where /proc is absent).
func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

func TestHugeMessagesRefusedBeforeTokenizing(t *testing.T) {
	e := newEnv(t, nil)
	body := chatBody("base", strings.Repeat("x", 8_000_000), "")
	runtime.GC()
	start := rss()
	t0 := time.Now()
	var wg sync.WaitGroup
	n := 6
	if slow > 1 {
		n = 1 // the race detector scans JSON ten times slower
	}
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, b := e.postNoT(body)
			if st != 400 || !strings.Contains(string(b), "context_length_exceeded") || !strings.Contains(string(b), `"param":"messages"`) {
				t.Errorf("%d %.300s", st, b)
			}
		}()
	}
	wg.Wait()
	if d := time.Since(t0); d > slow*10*time.Second {
		t.Fatalf("six refusals took %v", d)
	}
	if m := e.fm.maxEncode; m > e.srv.promptByteLimit() {
		t.Fatalf("the tokenizer was given %d bytes", m)
	}
	if start == 0 || slow > 1 {
		return // no /proc, or the race detector's shadow memory, which it keeps
	}
	// The bodies' memory goes back to the OS within a few seconds (the server returns it a second after).
	deadline := time.Now().Add(8 * time.Second)
	for rss() > start+96<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("RSS %d MB after, %d MB before", rss()>>20, start>>20)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestStoriesLongPromptStopsTokenizing: with the real tokenizer a prompt past the byte bound is refused at once,
// and one under it but over the context is refused from a prefix of its tokens.
func TestStoriesLongPromptStopsTokenizing(t *testing.T) {
	dir := filepath.Join(testenv.Testdata(t), "models", "stories260K")
	m, err := models.Load(dir, models.LoadOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	s, err := New(Config{Model: backend.FromModel(m), ModelName: "stories"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	ts := newTS(t, s)
	for _, n := range []int{8_000_000, s.promptByteLimit() - 100} {
		t0 := time.Now()
		resp, err := http.Post(ts.URL+"/v1/completions", "application/json",
			strings.NewReader(`{"model":"stories","prompt":"`+strings.Repeat("Lily ", n/5)+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(b), "context_length_exceeded") || !strings.Contains(string(b), `"param":"prompt"`) {
			t.Fatalf("%d bytes: %d %.300s", n, resp.StatusCode, b)
		}
		if d := time.Since(t0); d > slow*3*time.Second {
			t.Fatalf("%d bytes: refused after %v", n, d)
		}
	}
}

// startServer runs s on a loopback port until the test ends.
func startServer(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

func newStarted(t *testing.T, mod func(*Config)) (*Server, string) {
	t.Helper()
	fm := &fakeModel{done: make(chan struct{})}
	t.Cleanup(func() { close(fm.done) })
	cfg := Config{Model: fm, ModelName: "base"}
	mod(&cfg)
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, startServer(t, s)
}

// slowBody connects and sends headers promising a body that never comes.
func slowBody(addr, auth string) (net.Conn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	h := "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n"
	if auth != "" {
		h += "Authorization: Bearer " + auth + "\r\n"
	}
	_, err = io.WriteString(c, h+"\r\n")
	return c, err
}

func health(addr string) error {
	cl := &http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get("http://" + addr + "/health")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("health %d", resp.StatusCode)
	}
	return nil
}

func TestSlowBodiesAreClosedWhileHealthAnswers(t *testing.T) {
	n := 2000
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && int(lim.Cur) < 2*n+256 {
		n = (int(lim.Cur) - 256) / 2 // client and server ends live in this process
		t.Logf("file limit %d: %d connections", lim.Cur, n)
	}
	_, addr := newStarted(t, func(c *Config) { c.APIKey = "k"; c.ReadTimeout = time.Second })
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range n {
		auth := ""
		if i%2 == 0 {
			auth = "k" // authorised: the server waits ReadTimeout for the body, then 408
		} // unauthorised: 401 at once, without waiting for the body
		c, err := slowBody(addr, auth)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	if err := health(addr); err != nil {
		t.Fatalf("with %d slow bodies open: %v", n, err)
	}
	deadline := time.Now().Add(15 * time.Second)
	statuses := map[int]int{}
	for i, c := range conns {
		_ = c.SetReadDeadline(deadline)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("connection %d: no reply: %v", i, err)
		}
		statuses[resp.StatusCode]++
		if resp.StatusCode == 401 && resp.Header.Get("WWW-Authenticate") == "" {
			t.Fatal("401 without WWW-Authenticate")
		}
		io.Copy(io.Discard, resp.Body)
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatalf("connection %d (%d) stays open", i, resp.StatusCode)
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("connection %d (%d) not closed by the server", i, resp.StatusCode)
		}
	}
	if statuses[401] != (n+1)/2 || statuses[408] != n/2 {
		t.Fatalf("statuses %v", statuses)
	}
	if err := health(addr); err != nil {
		t.Fatal(err)
	}
}

func TestIdleAndConnectionCap(t *testing.T) {
	_, addr := newStarted(t, func(c *Config) {
		c.MaxConns, c.ReadTimeout, c.IdleTimeout = 4, 500*time.Millisecond, 300*time.Millisecond
	})
	// An idle keep-alive connection is closed after IdleTimeout.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatal(resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); err == nil || isTimeout(err) {
		t.Fatalf("idle keep-alive not closed: %v", err)
	}
	// Four silent connections fill the cap: the fifth client waits until ReadTimeout drops them.
	for range 4 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	t0 := time.Now()
	if err := health(addr); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d < 300*time.Millisecond {
		t.Fatalf("a fifth connection was served in %v with the cap of 4 full", d)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
