package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lorakit/lorakit/internal/testenv"
)

// TestServeBusyPortNamesFlag: a port already in use is reported with the flag that picks another.
func TestServeBusyPortNamesFlag(t *testing.T) {
	model := filepath.Join(testenv.Testdata(t), "models", "stories260K")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"serve", "--model", model, "--port", port})
	err = root.Execute()
	if err == nil || !strings.Contains(err.Error(), "--port") || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("serve on a busy port: %v", err)
	}
}

// The test binary runs as lorakit itself when LORAKIT_SERVE_TEST_MAIN is set (so the SIGTERM test drives the
// real command, exit code included, without a separate go build).
func init() {
	if os.Getenv("LORAKIT_SERVE_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
}

// TestServeSIGTERMDrainsAndExitsZero: SIGTERM while streams run and one client never reads: every reading
// stream ends with [DONE] (finished, or cut with a server_shutting_down error event), and the process exits 0
// soon after --shutdown-timeout.
func TestServeSIGTERMDrainsAndExitsZero(t *testing.T) {
	model := filepath.Join(testenv.Testdata(t), "models", "stories260K")
	cmd := exec.Command(os.Args[0], "serve", "--model", model, "--port", "0", "--shutdown-timeout", "100ms",
		"--write-timeout", "2s", "--log-format", "json", "--served-model-name", "stories")
	cmd.Env = append(os.Environ(), "LORAKIT_SERVE_TEST_MAIN=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var logs strings.Builder
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			logs.WriteString(line + "\n")
			if _, a, ok := strings.Cut(line, "http://"); ok {
				addr <- strings.Fields(a)[0]
			}
		}
	}()
	var url string
	select {
	case a := <-addr:
		url = "http://" + a
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not start")
	}
	body := `{"model":"stories","prompt":"Once upon a time","n":16,"max_tokens":480,"ignore_eos":true,"stream":true}`
	silent, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	fmt.Fprintf(silent, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	type result struct {
		text string
		err  error
	}
	results := make(chan result, 2)
	started := make(chan struct{}, 2)
	for range 2 {
		go func() {
			resp, err := http.Post(url+"/v1/completions", "application/json", strings.NewReader(body))
			if err != nil {
				results <- result{err: err}
				started <- struct{}{}
				return
			}
			defer resp.Body.Close()
			br := bufio.NewReader(resp.Body)
			first, err := br.ReadString('\n')
			started <- struct{}{}
			rest, _ := io.ReadAll(br)
			results <- result{text: first + string(rest), err: err}
		}()
	}
	<-started
	<-started
	t0 := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		if !strings.HasSuffix(r.text, "data: [DONE]\n\n") {
			t.Fatalf("a stream ends without [DONE]: ...%s", r.text[max(0, len(r.text)-300):])
		}
		t.Logf("stream of %d bytes, cut at shutdown: %v", len(r.text), strings.Contains(r.text, "server_shutting_down"))
		if strings.Contains(r.text, `"error"`) && !strings.Contains(r.text, "server_shutting_down") {
			t.Fatalf("a stream ends with another error: ...%s", r.text[max(0, len(r.text)-300):])
		}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve exited with %v after SIGTERM:\n%s", err, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("serve still runs %v after SIGTERM", time.Since(t0))
	}
}
