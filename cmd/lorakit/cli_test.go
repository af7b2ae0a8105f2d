package main

// Tests that drive the built lorakit binary, as a user (or a script) runs it: exit codes, what is left on
// disk, and what the messages say.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/lorakit/lorakit/models/testmodel"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// lorakitBin builds the command once per test binary run.
func lorakitBin(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "lorakit-cli-test-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "lorakit")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// result is one run of the binary.
type result struct {
	stdout, stderr string
	code           int
	early          bool // the run ended before the test could signal it
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// cli runs lorakit with args in dir (the test's working folder) and returns what it printed and its exit code.
func cli(t testing.TB, dir string, args ...string) result {
	t.Helper()
	cmd := exec.Command(lorakitBin(t), args...)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return r
}

// want checks a run's exit code and that stderr (or stdout) contains each substring.
func (r result) want(t testing.TB, code int, subs ...string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit %d, want %d\n%s", r.code, code, r)
		return
	}
	for _, s := range subs {
		if !strings.Contains(r.stderr+r.stdout, s) {
			t.Errorf("output lacks %q\n%s", s, r)
		}
	}
}

// fixture is a working folder with a tiny random model ("base") and a few SFT lines ("d.jsonl").
func fixture(t testing.TB, o testmodel.Options) string {
	t.Helper()
	dir := t.TempDir()
	if err := testmodel.Write(filepath.Join(dir, "base"), o); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for i := 0; i < 12; i++ {
		fmt.Fprintf(&b, "{\"prompt\":\"What is %d+%d?\",\"response\":\"%d\"}\n", i, i+1, 2*i+1)
	}
	writeFile(t, filepath.Join(dir, "d.jsonl"), b.String())
	return dir
}

func writeFile(t testing.TB, path, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// tempsIn lists the atomic-write temporaries (.NAME.tmp-…) left anywhere under dir.
func tempsIn(t testing.TB, dir string) []string {
	var left []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), ".tmp-") {
			left = append(left, p)
		}
		return nil
	})
	return left
}

var trainQuick = []string{"train", "--model", "base", "--data", "d.jsonl", "--max-steps", "2", "--batch-size", "4", "--threads", "1"}

// TestTrainOutRefuses: an earlier adapter is replaced only with --force; a folder holding a file of the user's
// is refused even with --force, and the file stays.
func TestTrainOutRefuses(t *testing.T) {
	dir := fixture(t, testmodel.Default())
	cli(t, dir, append(trainQuick, "--out", "a")...).want(t, 0)
	before := readFile(t, filepath.Join(dir, "a", "adapter_model.safetensors"))
	cli(t, dir, append(trainQuick, "--out", "a", "--seed", "7")...).want(t, 1, "earlier training run", "--force")
	if readFile(t, filepath.Join(dir, "a", "adapter_model.safetensors")) != before {
		t.Error("the refused run changed the adapter")
	}
	cli(t, dir, append(trainQuick, "--out", "a", "--seed", "7", "--force")...).want(t, 0)
	if readFile(t, filepath.Join(dir, "a", "adapter_model.safetensors")) == before {
		t.Error("--force did not replace the adapter")
	}
	writeFile(t, filepath.Join(dir, "mydocs", "notes.txt"), "mine")
	for _, extra := range [][]string{nil, {"--force"}} {
		cli(t, dir, append(append(trainQuick, "--out", "mydocs"), extra...)...).want(t, 1, "notes.txt", "even with --force")
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "mydocs")); len(ents) != 1 || readFile(t, filepath.Join(dir, "mydocs", "notes.txt")) != "mine" {
		t.Errorf("mydocs now holds %d entries", len(ents))
	}
	// an earlier adapter plus a file of the user's: refused even with --force
	writeFile(t, filepath.Join(dir, "a", "notes.txt"), "mine")
	cli(t, dir, append(trainQuick, "--out", "a", "--force")...).want(t, 1, "notes.txt")
}

// TestFilterOutIsInput: an output that is the input (by name, another spelling, or a hard link) is refused
// and the input stays as it was.
func TestFilterOutIsInput(t *testing.T) {
	dir := t.TempDir()
	scored := `{"score":{"line":1,"ppl":2,"ifd":0.5,"nll":0.7,"nll_alone":1.4,"total_tokens":9,"cluster":1},"prompt":"a","response":"b"}` + "\n"
	in := filepath.Join(dir, "s2.jsonl")
	writeFile(t, in, scored)
	if err := os.Link(in, filepath.Join(dir, "link.jsonl")); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"--out", "s2.jsonl"}, {"--out", "./s2.jsonl"}, {"--out", "link.jsonl"},
		{"--out", "clean.jsonl", "--report", "s2.jsonl"}, {"--out", "clean.jsonl", "--dropped", "link.jsonl"},
	} {
		cli(t, dir, append([]string{"data", "filter", "s2.jsonl"}, args...)...).want(t, 1, "the same file")
		if readFile(t, in) != scored {
			t.Fatalf("%v: the input changed", args)
		}
	}
	cli(t, dir, "data", "filter", "s2.jsonl", "--out", "clean.jsonl", "--report", "r.json", "--dropped", "dropped.jsonl").want(t, 0)
	if left := tempsIn(t, dir); len(left) > 0 {
		t.Errorf("temporaries left: %v", left)
	}
}

// TestScoreRefusesExisting: without --resume, an interrupted run's partial or an existing output is refused,
// naming --resume and --force; --force starts over.
func TestScoreRefusesExisting(t *testing.T) {
	dir := fixture(t, testmodel.Default())
	score := []string{"data", "score", "d.jsonl", "--model", "base", "--out", "s.jsonl", "--threads", "1"}
	writeFile(t, filepath.Join(dir, "s.jsonl.partial"), "{\"score\":{\"line\":1}}\n")
	cli(t, dir, score...).want(t, 1, "s.jsonl.partial", "--resume", "--force")
	cli(t, dir, append(score, "--force")...).want(t, 0)
	want := readFile(t, filepath.Join(dir, "s.jsonl"))
	cli(t, dir, score...).want(t, 1, "s.jsonl exists", "--force")
	if readFile(t, filepath.Join(dir, "s.jsonl")) != want {
		t.Error("the refused run changed the output")
	}
	cli(t, dir, "data", "score", "d.jsonl", "--model", "base", "--out", "d.jsonl", "--force").want(t, 1, "the same file")
	cli(t, dir, append(score, "--resume")...).want(t, 0)
	if readFile(t, filepath.Join(dir, "s.jsonl")) != want {
		t.Error("--resume of a complete output changed it")
	}
}

// TestModelFolderErrors: a --model that is not a model folder says what it is and what to do.
func TestModelFolderErrors(t *testing.T) {
	dir := fixture(t, testmodel.Default())
	cli(t, dir, append(trainQuick, "--out", "a")...).want(t, 0)
	writeFile(t, filepath.Join(dir, "weights"), "not a folder")
	os.MkdirAll(filepath.Join(dir, "empty"), 0o755)
	for _, f := range []string{"config.json", "tokenizer.json", "tokenizer_config.json"} { // an HF folder with .bin weights
		writeFile(t, filepath.Join(dir, "pt", f), readFile(t, filepath.Join(dir, "base", f)))
	}
	writeFile(t, filepath.Join(dir, "pt", "pytorch_model.bin"), "pickle")
	for _, c := range []struct{ model, want string }{
		{"a", "a is a PEFT adapter folder (adapter_config.json), not a model; pass it as --adapter, with --model its base"},
		{"weights", "is a file but not a GGUF file"},
		{"empty", "is empty"},
		{"pt", "PyTorch pickle weights (pytorch_model.bin)"},
	} {
		cli(t, dir, "generate", "--model", c.model, "--prompt", "hi").want(t, 1, c.want)
		cli(t, dir, "data", "score", "d.jsonl", "--model", c.model, "--out", "s.jsonl").want(t, 1, c.want)
		cli(t, dir, "train", "--model", c.model, "--data", "d.jsonl", "--out", "x").want(t, 1, c.want) // not append(trainQuick[:1], ...): that would overwrite trainQuick
		cli(t, dir, "quantize", c.model, "q").want(t, 1, c.want)
		if c.model != "a" {
			cli(t, dir, "merge", c.model, "a", "m").want(t, 1, c.want)
		}
	}
}

// TestAdapterOtherBase: an adapter for another base is one summary line naming its recorded base, then a few
// tensors, not one line per tensor.
func TestAdapterOtherBase(t *testing.T) {
	dir := fixture(t, testmodel.Default())
	o := testmodel.Default()
	o.Hidden, o.Intermediate, o.Layers = 48, 96, 4
	if err := testmodel.Write(filepath.Join(dir, "big"), o); err != nil {
		t.Fatal(err)
	}
	cli(t, dir, "train", "--model", "big", "--data", "d.jsonl", "--max-steps", "1", "--out", "a").want(t, 0)
	r := cli(t, dir, "generate", "--model", "base", "--adapter", "a", "--prompt", "hi")
	r.want(t, 1, "made for another model", "28 of 28", `base_model_name_or_path "big"`, "... and 25 more")
	if n := strings.Count(r.stderr, "\n"); n > 6 {
		t.Errorf("%d lines of error:\n%s", n, r.stderr)
	}
}

// TestCLIUsageErrors: unknown subcommands and flags exit non-zero with a suggestion; flags that do not apply
// are refused naming why.
func TestCLIUsageErrors(t *testing.T) {
	dir := fixture(t, testmodel.Default())
	cli(t, dir, "data", "scor", "x").want(t, 1, `unknown command "scor" for "lorakit data"`, "Did you mean this?", "score")
	cli(t, dir, "trian").want(t, 1, "Did you mean this?", "train")
	cli(t, dir, "train", "--max-step", "3").want(t, 1, "unknown flag: --max-step", "--max-steps")
	cli(t, dir, "data", "score", "--ouput", "x").want(t, 1, "--out")
	cli(t, dir, append(trainQuick, "--out", "f", "--method", "full", "--rank", "8")...).want(t, 1, "--rank does not apply to --method full")
	cli(t, dir, append(trainQuick, "--out", "f", "--eval-every", "2")...).want(t, 1, "--eval-every needs held-out data")
	cli(t, dir, "eval", "--model", "base", "--data", "d.jsonl", "--no-generate", "--max-new-tokens", "5").want(t, 1, "--max-new-tokens does not apply with --no-generate")
	cli(t, dir, "quantize", "base", "q", "--type", "int8", "--double-quant").want(t, 1, "--double-quant does not apply to int8")
	if r := cli(t, dir, "data"); r.code != 0 || !strings.Contains(r.stdout, "Available Commands") {
		t.Errorf("lorakit data alone should print its help: %s", r)
	}
}

// TestConfigKeys: --config accepts the flag names with '-' or '_', and flags on the command line win.
func TestConfigKeys(t *testing.T) {
	dir := fixture(t, testmodel.Default())
	writeFile(t, filepath.Join(dir, "run.yaml"), "model: base\ndata: d.jsonl\nmax_steps: 2\nbatch-size: 4\nlr_scheduler: constant\n")
	cli(t, dir, "train", "--config", "run.yaml", "--out", "a", "--max-steps", "1", "--json").want(t, 0, `"steps": 1`)
	args := readFile(t, filepath.Join(dir, "a", "training_args.json"))
	for _, s := range []string{`"lr_scheduler": "constant"`, `"batch_size": 4`, `"max_steps": 1`} {
		if !strings.Contains(args, s) {
			t.Errorf("training_args.json lacks %s:\n%s", s, args)
		}
	}
	writeFile(t, filepath.Join(dir, "bad.yaml"), "max_step: 2\n")
	cli(t, dir, "train", "--config", "bad.yaml").want(t, 1, "max-step")
}

// TestResumeAlone: --resume DIR alone restores every setting of the run; a contradicting flag is refused
// naming both values; the resumed run ends with the same adapter as an uninterrupted one.
func TestResumeAlone(t *testing.T) {
	dir := fixture(t, testmodel.Default())
	run := []string{"train", "--model", "base", "--data", "d.jsonl", "--batch-size", "4", "--threads", "1", "--rank", "4", "--alpha", "8", "--lr", "1e-3"}
	cli(t, dir, append(run, "--out", "full", "--max-steps", "4")...).want(t, 0)
	// a run that stopped at step 2 (its checkpoint kept), as Ctrl-C leaves it
	cli(t, dir, append(run, "--out", "part", "--max-steps", "2", "--save-every", "1")...).want(t, 0)
	cli(t, dir, "train", "--resume", "part", "--rank", "8").want(t, 1, "--rank 8", "the checkpoint has 4")
	cli(t, dir, "train", "--resume", "part/checkpoint-1", "--max-steps", "4").want(t, 0)
	a := readFile(t, filepath.Join(dir, "full", "adapter_model.safetensors"))
	if b := readFile(t, filepath.Join(dir, "part", "adapter_model.safetensors")); a != b {
		t.Error("resumed adapter differs from the uninterrupted run's")
	}
}

// TestVersionEnv: --version names the Go version and the CPU features in use; env adds the machine.
func TestVersionEnv(t *testing.T) {
	dir := t.TempDir()
	cli(t, dir, "--version").want(t, 0, "lorakit ", "go1.", "kernels: ")
	cli(t, dir, "env").want(t, 0, "cores", "kernels: ")
}

// TestWalkthrough runs the README's walkthrough (steps 2 to 8) as written, on a tiny local model in place of
// the pulled SmolLM2, and checks that every step succeeds and leaves no temporary.
func TestWalkthrough(t *testing.T) {
	if testing.Short() {
		t.Skip("trains for a few seconds; skipped with -short")
	}
	dir := fixture(t, testmodel.Default())
	m := "./base"
	var all strings.Builder
	for a := 1; a <= 9; a++ {
		for b := 1; b <= 9; b++ {
			fmt.Fprintf(&all, "{\"prompt\":\"What is %d+%d?\",\"response\":\"%d\"}\n", a, b, a+b)
		}
	}
	lines := strings.SplitAfter(all.String(), "\n")
	writeFile(t, filepath.Join(dir, "train.jsonl"), strings.Join(lines[:72], ""))
	writeFile(t, filepath.Join(dir, "test.jsonl"), strings.Join(lines[72:81], ""))
	for _, args := range [][]string{
		{"data", "check", "train.jsonl", "--model", m},
		{"data", "score", "train.jsonl", "--model", m, "--out", "scored.jsonl"},
		{"data", "filter", "scored.jsonl", "--dedup", "--keep-top", "0.9", "--by", "ppl", "--out", "clean.jsonl", "--report", "report.json"},
		{"train", "--model", m, "--data", "clean.jsonl", "--out", "sum-lora", "--method", "lora", "--rank", "16", "--alpha", "32", "--lr", "1e-3", "--epochs", "3"},
		{"eval", "--model", m, "--data", "test.jsonl"},
		{"eval", "--model", m, "--adapter", "./sum-lora", "--data", "test.jsonl"},
		{"merge", m, "./sum-lora", "./merged", "--verify"},
		{"generate", "--model", "./merged", "--chat", "--prompt", "What is 4+5?", "--temperature", "0"},
		{"quantize", m, "./SmolLM2-nf4", "--type", "nf4", "--double-quant"},
	} {
		cli(t, dir, args...).want(t, 0)
	}
	for _, f := range []string{"scored.jsonl", "clean.jsonl", "report.json", "report.svg", "sum-lora/adapter_model.safetensors", "merged/model.safetensors", "SmolLM2-nf4/config.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	if left := tempsIn(t, dir); len(left) > 0 {
		t.Errorf("temporaries left: %v", left)
	}
}

// TestTrainSkipsSummarised: train names the first few bad lines and counts the rest in one line.
func TestTrainSkipsSummarised(t *testing.T) {
	dir := fixture(t, testmodel.Default())
	var b strings.Builder
	b.WriteString(readFile(t, filepath.Join(dir, "d.jsonl")))
	for i := 0; i < 20; i++ {
		b.WriteString("{\"prompt\":\"x\"}\n")
	}
	writeFile(t, filepath.Join(dir, "bad.jsonl"), b.String())
	r := cli(t, dir, "train", "--model", "base", "--data", "bad.jsonl", "--max-steps", "1", "--out", "a")
	r.want(t, 0, "… and 15 more bad lines of bad.jsonl")
	if n := strings.Count(r.stderr, "skip: "); n != 6 {
		t.Errorf("%d skip lines, want 5 and the summary:\n%s", n, r.stderr)
	}
}
