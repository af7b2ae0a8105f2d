package main

// The signal harness: every long command, interrupted by SIGINT at a random point of its work, exits 130
// after one line, leaves no temporary behind, and leaves either nothing or a partial that its resume
// completes to the same bytes as an uninterrupted run. LORAKIT_SIGNAL_RUNS sets the runs per command
// (default 1 so that a plain go test ./... stays quick; CI sets 3; the full check is 20).

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lorakit/lorakit/models/testmodel"
)

func signalRuns(t *testing.T) int {
	if testing.Short() {
		t.Skip("signal harness runs real work; skipped with -short")
	}
	n := 1
	if s := os.Getenv("LORAKIT_SIGNAL_RUNS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("LORAKIT_SIGNAL_RUNS=%q", s)
		}
		n = v
	}
	return n
}

// signalModel is big enough that each command works for a second or more on 2 cores.
func signalModel() testmodel.Options {
	o := testmodel.Default()
	o.Hidden, o.Intermediate, o.Layers, o.Heads, o.KVHeads, o.DType = 384, 1024, 8, 6, 2, "BF16"
	return o
}

// started runs lorakit in dir and returns once it has written its first line to stderr (its work has begun:
// every command prints only from inside its interruptible work), with the process and a channel that yields
// its whole stderr and exit code when it ends.
func started(t *testing.T, dir string, env []string, args ...string) (*exec.Cmd, <-chan result, time.Time) {
	t.Helper()
	cmd := exec.Command(lorakitBin(t), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	first := make(chan struct{})
	done := make(chan result, 1)
	go func() {
		var buf strings.Builder
		br := bufio.NewReader(errPipe)
		once := false
		for {
			line, err := br.ReadString('\n')
			buf.WriteString(line)
			if !once && line != "" {
				once = true
				close(first)
			}
			if err != nil {
				break
			}
		}
		if !once {
			close(first)
		}
		werr := cmd.Wait()
		r := result{stderr: buf.String()}
		var ee *exec.ExitError
		if errors.As(werr, &ee) {
			r.code = ee.ExitCode()
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				r.code = -int(ws.Signal())
			}
		}
		done <- r
	}()
	<-first
	return cmd, done, time.Now()
}

// interrupt runs a command, sends SIGINT at a random moment within frac of its uninterrupted work time, and
// checks the exit code, the one line, and that no temporary is left.
func interrupt(t *testing.T, dir string, env []string, work time.Duration, rng *rand.Rand, args ...string) result {
	t.Helper()
	cmd, done, _ := started(t, dir, env, args...)
	time.Sleep(time.Duration(rng.Float64() * 0.6 * float64(work)))
	if exited(cmd.Process.Pid) { // it finished before the signal could be sent: a completed run, not an interrupt
		r := <-done
		if r.code != 0 {
			t.Fatalf("lorakit %s: %s", strings.Join(args, " "), r)
		}
		r.early = true
		return r
	}
	cmd.Process.Signal(os.Interrupt)
	r := <-done
	if r.code != 130 {
		t.Fatalf("lorakit %s: exit %d after SIGINT, want 130\n%s", strings.Join(args, " "), r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "lorakit: interrupted: ") || strings.Count(r.stderr, "interrupted") != 1 {
		t.Fatalf("want one final 'lorakit: interrupted: ...' line, got:\n%s", r.stderr)
	}
	if left := tempsIn(t, dir); len(left) > 0 {
		t.Fatalf("temporaries left after SIGINT: %v\n%s", left, r.stderr)
	}
	return r
}

// exited reports whether the process has already exited (a zombie not yet waited for, or gone). On a loaded
// machine the random delay can outlast the whole run; a signal sent then would reach no handler.
func exited(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return runtime.GOOS == "linux"
	}
	// The state follows the command name, which is in parentheses and may itself hold spaces.
	rest := stat[bytes.LastIndexByte(stat, ')')+1:]
	return len(rest) > 1 && rest[1] == 'Z'
}

// timed runs a command to completion and returns how long its work took after its first stderr line.
func timed(t *testing.T, dir string, env []string, args ...string) time.Duration {
	t.Helper()
	_, done, t0 := started(t, dir, env, args...)
	r := <-done
	if r.code != 0 {
		t.Fatalf("lorakit %s: %s", strings.Join(args, " "), r)
	}
	d := time.Since(t0)
	t.Logf("uninterrupted %s: %s of work after its first line", args[0], d.Round(time.Millisecond))
	return d
}

// outcomeCount tallies how the interrupted runs ended: nothing written, a partial resumed, or the work already
// complete when the signal was acted on (the output is then checked against the uninterrupted one).
type outcomeCount struct{ nothing, partial, complete int }

func (o outcomeCount) log(t *testing.T) {
	t.Logf("%d interrupted runs: %d wrote nothing, %d left a partial that resumed to the same bytes, %d had completed",
		o.nothing+o.partial+o.complete, o.nothing, o.partial, o.complete)
}

// completed reports (and counts) a run whose work had finished when the signal was acted on.
func completed(o *outcomeCount, r result) bool {
	if r.early || strings.Contains(r.stderr, "interrupted: ") && strings.Contains(r.stderr, "had completed") {
		o.complete++
		return true
	}
	return false
}

func sameFiles(t *testing.T, a, b string, names ...string) {
	t.Helper()
	for _, n := range names {
		if readFile(t, filepath.Join(a, n)) != readFile(t, filepath.Join(b, n)) {
			t.Fatalf("%s differs between %s and %s", n, a, b)
		}
	}
}

func TestSignalTrain(t *testing.T) {
	runs := signalRuns(t)
	dir := fixture(t, signalModel())
	args := []string{"train", "--model", "base", "--data", "d.jsonl", "--batch-size", "2", "--max-steps", "6", "--threads", "2", "--rank", "8"}
	work := timed(t, dir, nil, append(args, "--out", "ref")...)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	var outcomes outcomeCount
	for i := range runs {
		out := fmt.Sprintf("run%d", i)
		r := interrupt(t, dir, nil, work, rng, append(args, "--out", out)...)
		switch {
		case completed(&outcomes, r):
		case strings.Contains(r.stderr, "resume with: lorakit train --resume "):
			outcomes.partial++
			cli(t, dir, "train", "--resume", out).want(t, 0)
		case strings.Contains(r.stderr, "interrupted: nothing was written"): // stopped while loading
			outcomes.nothing++
			if _, err := os.Stat(filepath.Join(dir, out)); !os.IsNotExist(err) {
				t.Fatalf("nothing was written, but %s exists (%v)", out, err)
			}
			cli(t, dir, append(args, "--out", out)...).want(t, 0)
		default:
			t.Fatalf("neither a checkpoint to resume nor nothing written:\n%s", r.stderr)
		}
		sameFiles(t, filepath.Join(dir, "ref"), filepath.Join(dir, out), "adapter_model.safetensors", "adapter_config.json")
		os.RemoveAll(filepath.Join(dir, out))
	}
	outcomes.log(t)
}

func TestSignalScore(t *testing.T) {
	runs := signalRuns(t)
	dir := fixture(t, signalModel())
	var b strings.Builder
	for i := 0; i < 36; i++ {
		fmt.Fprintf(&b, "{\"prompt\":\"Add %d and %d, then say it in words.\",\"response\":\"%d is the sum of %d and %d.\"}\n", i, 3*i, 4*i, i, 3*i)
	}
	writeFile(t, filepath.Join(dir, "many.jsonl"), b.String())
	args := []string{"data", "score", "many.jsonl", "--model", "base", "--batch-tokens", "96", "--threads", "2"}
	work := timed(t, dir, nil, append(args, "--out", "ref.jsonl")...)
	want := readFile(t, filepath.Join(dir, "ref.jsonl"))
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	var outcomes outcomeCount
	for i := range runs {
		out := fmt.Sprintf("run%d.jsonl", i)
		r := interrupt(t, dir, nil, work, rng, append(args, "--out", out)...)
		switch {
		case completed(&outcomes, r):
		case strings.Contains(r.stderr, "kept "+out+".partial") && strings.Contains(r.stderr, "--resume"):
			outcomes.partial++
			if _, err := os.Stat(filepath.Join(dir, out)); err == nil {
				t.Fatal("an interrupted run wrote the final output")
			}
			cli(t, dir, append(args, "--out", out, "--resume")...).want(t, 0)
		case strings.Contains(r.stderr, "interrupted: nothing was written"): // stopped before its first batch
			outcomes.nothing++
			if left, _ := filepath.Glob(filepath.Join(dir, out+"*")); len(left) > 0 {
				t.Fatalf("nothing was written, but %v exist", left)
			}
			cli(t, dir, append(args, "--out", out)...).want(t, 0)
		default:
			t.Fatalf("neither a partial to resume nor nothing written:\n%s", r.stderr)
		}
		if readFile(t, filepath.Join(dir, out)) != want {
			t.Fatalf("resumed %s differs from the uninterrupted output", out)
		}
		os.Remove(filepath.Join(dir, out))
	}
	outcomes.log(t)
}

func TestSignalQuantize(t *testing.T) {
	runs := signalRuns(t)
	dir := fixture(t, signalModel())
	args := []string{"quantize", "base", "--threads", "1", "--double-quant"}
	work := timed(t, dir, nil, append(args, "ref")...)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	var outcomes outcomeCount
	for range runs {
		r := interrupt(t, dir, nil, work, rng, append(args, "out")...)
		if completed(&outcomes, r) { // the signal came after the output was in place
			sameFiles(t, filepath.Join(dir, "ref"), filepath.Join(dir, "out"), "model.safetensors", "config.json")
			os.RemoveAll(filepath.Join(dir, "out"))
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "out")); err == nil || !strings.Contains(r.stderr, "nothing written at out") {
			t.Fatalf("an interrupted quantize left out (%v):\n%s", err, r.stderr)
		}
		outcomes.nothing++
	}
	outcomes.log(t)
	cli(t, dir, append(args, "out")...).want(t, 0)
	sameFiles(t, filepath.Join(dir, "ref"), filepath.Join(dir, "out"), "model.safetensors", "config.json")
}

// TestStaleTemporaryAfterKill: a quantize killed with SIGKILL (no handler runs) leaves its hidden temporary
// folder; the next quantize of the same output removes it.
func TestStaleTemporaryAfterKill(t *testing.T) {
	signalRuns(t)
	dir := fixture(t, signalModel())
	cmd, done, _ := started(t, dir, nil, "quantize", "base", "out", "--threads", "1")
	cmd.Process.Kill()
	<-done
	left := tempsIn(t, dir)
	if len(left) == 0 {
		t.Skip("the killed quantize had not created its temporary folder yet")
	}
	cli(t, dir, "quantize", "base", "out", "--threads", "1").want(t, 0)
	if left := tempsIn(t, dir); len(left) > 0 {
		t.Errorf("stale temporaries still there: %v", left)
	}
}

func TestSignalMerge(t *testing.T) {
	runs := signalRuns(t)
	dir := fixture(t, signalModel())
	cli(t, dir, "train", "--model", "base", "--data", "d.jsonl", "--max-steps", "1", "--out", "ad", "--rank", "8").want(t, 0)
	args := []string{"merge", "base", "ad", "--threads", "1"}
	work := timed(t, dir, nil, append(args, "ref")...)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 4))
	var outcomes outcomeCount
	for range runs {
		r := interrupt(t, dir, nil, work, rng, append(args, "out")...)
		if completed(&outcomes, r) { // the signal came after the output was in place
			sameFiles(t, filepath.Join(dir, "ref"), filepath.Join(dir, "out"), "model.safetensors")
			os.RemoveAll(filepath.Join(dir, "out"))
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "out")); err == nil || !strings.Contains(r.stderr, "nothing written at out") {
			t.Fatalf("an interrupted merge left out (%v):\n%s", err, r.stderr)
		}
		outcomes.nothing++
	}
	outcomes.log(t)
	cli(t, dir, append(args, "out")...).want(t, 0)
	sameFiles(t, filepath.Join(dir, "ref"), filepath.Join(dir, "out"), "model.safetensors")
}

// slowHub serves a folder with the hub's tree API and resolve layout, at about rate bytes per second.
type slowHub struct {
	dir  string
	rate int
}

func (h *slowHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	const tree, resolve = "/api/models/org/m/tree/main", "/org/m/resolve/main/"
	switch {
	case r.URL.Path == tree:
		ents, _ := os.ReadDir(h.dir)
		var out []map[string]any
		for _, e := range ents {
			b, _ := os.ReadFile(filepath.Join(h.dir, e.Name()))
			sum := sha256.Sum256(b)
			out = append(out, map[string]any{"type": "file", "path": e.Name(), "size": len(b),
				"lfs": map[string]any{"oid": hex.EncodeToString(sum[:]), "size": len(b)}})
		}
		json.NewEncoder(w).Encode(out)
	case strings.HasPrefix(r.URL.Path, resolve):
		b, err := os.ReadFile(filepath.Join(h.dir, strings.TrimPrefix(r.URL.Path, resolve)))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		start := 0
		if rg := r.Header.Get("Range"); rg != "" {
			start, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"))
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(b)-1, len(b)))
			w.WriteHeader(http.StatusPartialContent)
		}
		const chunk = 32 << 10
		for i := start; i < len(b); i += chunk {
			if _, err := w.Write(b[i:min(i+chunk, len(b))]); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			time.Sleep(time.Duration(float64(chunk) / float64(h.rate) * float64(time.Second)))
		}
	default:
		http.NotFound(w, r)
	}
}

func TestSignalPull(t *testing.T) {
	runs := signalRuns(t)
	dir := fixture(t, signalModel())
	srv := httptest.NewServer(&slowHub{dir: filepath.Join(dir, "base"), rate: 16 << 20})
	defer srv.Close()
	t.Setenv("HF_ENDPOINT", srv.URL) // for cli's runs too
	var env []string
	work := timed(t, dir, env, "pull", "org/m", "--local-dir", "ref")
	sameFiles(t, filepath.Join(dir, "base"), filepath.Join(dir, "ref"), "model.safetensors", "config.json", "tokenizer.json")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 5))
	var outcomes outcomeCount
	for i := range runs {
		out := fmt.Sprintf("run%d", i)
		r := interrupt(t, dir, env, work, rng, "pull", "org/m", "--local-dir", out)
		if !completed(&outcomes, r) {
			if !strings.Contains(r.stderr, "resume with: lorakit pull org/m --local-dir "+out) {
				t.Fatalf("no resume hint:\n%s", r.stderr)
			}
			if _, err := os.Stat(filepath.Join(dir, out, "model.safetensors")); err == nil {
				t.Fatal("an interrupted pull left a complete-looking model.safetensors")
			}
			outcomes.partial++
		}
		rr := cli(t, dir, "pull", "org/m", "--local-dir", out)
		rr.want(t, 0)
		sameFiles(t, filepath.Join(dir, "base"), filepath.Join(dir, out), "model.safetensors", "config.json", "tokenizer.json")
		if left, _ := filepath.Glob(filepath.Join(dir, out, "*.incomplete")); len(left) > 0 {
			t.Fatalf("partial downloads left after the resumed pull: %v", left)
		}
	}
	outcomes.log(t)
}

// TestSignalBenchShape: bench --shape writes its random checkpoint under the temporary directory; interrupted
// while writing it, loading or timing, bench exits 130 and removes it.
func TestSignalBenchShape(t *testing.T) {
	runs := signalRuns(t)
	dir := t.TempDir()
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	env := []string{"TMPDIR=" + tmp}
	args := []string{"bench", "--shape", "smollm2-135m", "--dtype", "bf16", "--prompt", "32", "--gen", "16", "--reps", "1", "--threads", "1", "--no-mem"}
	work := timed(t, dir, env, args...)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 4))
	for range runs {
		r := interrupt(t, dir, env, work, rng, args...)
		left, err := os.ReadDir(tmp)
		if err != nil {
			t.Fatal(err)
		}
		if len(left) > 0 {
			t.Fatalf("bench left %s in the temporary directory (early %v):\n%s", left[0].Name(), r.early, r.stderr)
		}
	}
}
