package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

const reviewScored = `{"score":{"line":1,"ppl":5,"ifd":0.5,"total_tokens":10,"cluster":1},"prompt":"a","response":"1"}
{"score":{"line":2,"ppl":50,"ifd":0.7,"total_tokens":10,"cluster":2},"prompt":"b","response":"2"}
{"score":{"line":3,"ppl":4,"ifd":1.2,"total_tokens":10,"cluster":3},"prompt":"c","response":"3"}
{"score":{"line":4,"ppl":4,"ifd":0.9,"total_tokens":10,"cluster":4},"prompt":"d","response":"4"}
`

// TestDataReviewCLI: data review serves on 127.0.0.1 with the token, saves decisions, exits 130 on Ctrl-C
// leaving no temporary; data filter --review applies exactly those decisions and refuses a changed input.
func TestDataReviewCLI(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "scored.jsonl"), reviewScored)
	cmd, addr, stderr := startReview(t, dir, `open (http://127\.0\.0\.1:\d+/)#token=tk \(bound to 127\.0\.0\.1: this machine only`,
		"data", "review", "scored.jsonl", "--port", "0", "--token", "tk")
	call := func(method, path string, body any, out any) int {
		var rd *bytes.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		} else {
			rd = bytes.NewReader(nil)
		}
		req, _ := http.NewRequest(method, addr+path, rd)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer tk")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		if out != nil {
			json.NewDecoder(res.Body).Decode(out)
		}
		return res.StatusCode
	}
	var rows struct {
		Rows []struct {
			Line int    `json:"line"`
			Hash string `json:"hash"`
		} `json:"rows"`
	}
	if code := call("GET", "api/rows", nil, &rows); code != 200 || len(rows.Rows) != 4 {
		t.Fatalf("rows: %d %+v", code, rows)
	}
	changes := []map[string]any{
		{"line": 1, "hash": rows.Rows[0].Hash, "decision": "drop"},
		{"line": 2, "hash": rows.Rows[1].Hash, "decision": "keep"},
		{"line": 3, "hash": rows.Rows[2].Hash, "decision": "keep", "edit": map[string]string{"prompt": "c", "response": "three"}},
	}
	if code := call("POST", "api/decisions", map[string]any{"changes": changes}, nil); code != 200 {
		t.Fatalf("decisions: %d", code)
	}
	stopReview(t, cmd, stderr)
	if !strings.Contains(stderr.String(), "every decision is saved in scored.review.jsonl") {
		t.Errorf("stderr lacks what was kept:\n%s", stderr.String())
	}
	if left := tempsIn(t, dir); len(left) > 0 {
		t.Errorf("temporaries left: %v", left)
	}

	cli(t, dir, "data", "filter", "scored.jsonl", "--review", "scored.review.jsonl", "--max-ppl", "10", "--out", "kept.jsonl").
		want(t, 0, "3 kept, 1 dropped", "review scored.review.jsonl: 2 kept (1 edited), 1 dropped, 1 undecided")
	// line 1 dropped by the review, line 2 kept against --max-ppl, line 3 edited, line 4 left to the rules (kept)
	want := `{"prompt":"b","response":"2"}` + "\n" + `{"prompt":"c","response":"three"}` + "\n" + `{"prompt":"d","response":"4"}` + "\n"
	if got := readFile(t, filepath.Join(dir, "kept.jsonl")); got != want {
		t.Errorf("kept.jsonl:\n%s\nwant:\n%s", got, want)
	}
	cli(t, dir, "data", "filter", "scored.jsonl", "--review", "scored.review.jsonl", "--drop-undecided", "--out", "kept2.jsonl").want(t, 0)
	if got := strings.Count(readFile(t, filepath.Join(dir, "kept2.jsonl")), "\n"); got != 2 {
		t.Errorf("--drop-undecided kept %d lines, want 2", got)
	}
	cli(t, dir, "data", "filter", "scored.jsonl", "--drop-undecided", "--out", "k.jsonl").want(t, 1, "--drop-undecided needs --review")
	cli(t, dir, "data", "filter", "scored.jsonl", "--review", "nothere.jsonl", "--out", "k.jsonl").want(t, 1, "nothere.jsonl")

	// the input changes under the review: refused, naming the line
	changed := strings.Replace(reviewScored, `"prompt":"c","response":"3"`, `"prompt":"c","response":"33"`, 1)
	writeFile(t, filepath.Join(dir, "scored.jsonl"), changed)
	cli(t, dir, "data", "filter", "scored.jsonl", "--review", "scored.review.jsonl", "--out", "kept3.jsonl").
		want(t, 1, "does not match scored.jsonl at line 3")
	if _, err := os.Stat(filepath.Join(dir, "kept3.jsonl")); err == nil {
		t.Error("kept3.jsonl written despite the mismatch")
	}
}

// startReview starts lorakit data review in dir and reads its address (the first group of pattern) from its
// output; the process is killed at the end of the test if still running.
func startReview(t *testing.T, dir, pattern string, args ...string) (*exec.Cmd, string, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(lorakitBin(t), args...)
	cmd.Dir = dir
	stderr := new(bytes.Buffer)
	cmd.Stderr = stderr
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	addr := ""
	br := bufio.NewReader(outPipe)
	re := regexp.MustCompile(pattern)
	for addr == "" {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("data review ended before printing its address: %v\n%s", err, stderr.String())
		}
		if m := re.FindStringSubmatch(line); m != nil {
			addr = m[1]
		}
	}
	go func() { _, _ = bufio.NewReader(br).WriteTo(new(bytes.Buffer)) }()
	return cmd, addr, stderr
}

// stopReview interrupts data review as Ctrl-C does and wants exit code 130 within 20 s.
func stopReview(t *testing.T, cmd *exec.Cmd, stderr *bytes.Buffer) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("data review did not stop on SIGINT")
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("exit: %v, want 130\n%s", err, stderr.String())
	}
}

// TestDataReviewHost: a host other machines can reach is refused without --token, before anything is
// written; a loopback host given by name binds this machine only and needs no token.
func TestDataReviewHost(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "scored.jsonl"), reviewScored)
	for _, host := range []string{"0.0.0.0", "192.0.2.1", "reviewbox.example", "::"} {
		cli(t, dir, "data", "review", "scored.jsonl", "--port", "0", "--host", host).
			want(t, 1, "--host "+host+" can be reached from other machines", "--token", "ssh -L")
	}
	if _, err := os.Stat(filepath.Join(dir, "scored.review.jsonl")); err == nil {
		t.Fatal("a refused review created the review file")
	}
	cmd, addr, stderr := startReview(t, dir, `open (http://127\.0\.0\.1:\d+/) \(bound to 127\.0\.0\.1: this machine only\)`,
		"data", "review", "scored.jsonl", "--port", "0", "--host", "localhost")
	res, err := http.Get(addr + "api/info")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("api/info on the loopback bind: %d", res.StatusCode)
	}
	stopReview(t, cmd, stderr)
}
