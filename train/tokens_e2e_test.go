package train

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/lorakit/lorakit/internal/testenv"
	"github.com/lorakit/lorakit/models/lora"
)

// eosTemplateModel copies stories260K into a temporary folder with its chat template ending assistant turns in
// </s> (EOS, never seen in its pre-training) instead of <s>.
func eosTemplateModel(t *testing.T) string {
	t.Helper()
	src := filepath.Join(testenv.Testdata(t), "models", "stories260K")
	dst := filepath.Join(t.TempDir(), "stories260K-eos")
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if e.Name() == "tokenizer_config.json" {
			var c map[string]any
			if err := json.Unmarshal(b, &c); err != nil {
				t.Fatal(err)
			}
			tpl := c["chat_template"].(string)
			eos := strings.Replace(tpl, "{% if message['role'] == 'assistant' %}{{ bos_token }}", "{% if message['role'] == 'assistant' %}{{ eos_token }}", 1)
			if eos == tpl {
				t.Fatal("stories260K's chat template changed: no assistant-turn bos_token to replace")
			}
			c["chat_template"] = eos
			if b, err = json.Marshal(c); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// logRecorder keeps the reporter's lines.
type logRecorder struct {
	nopReporter
	mu    sync.Mutex
	lines []string
}

func (r *logRecorder) Logf(format string, args ...any) {
	r.mu.Lock()
	r.lines = append(r.lines, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

// TestUntrainedEOSWarnsAndTrains: on stories260K with turns ending in </s>, a default run names </s> as
// untrained (with the test, and the flag to use) and trains no rows; --train-tokens auto trains its row, saved
// as PEFT's trainable_token_indices; with turns ending in <s> (trained), </s> is only EOS and auto leaves it.
func TestUntrainedEOSWarnsAndTrains(t *testing.T) {
	model := eosTemplateModel(t)
	dir := t.TempDir()
	dataPath := filepath.Join(dir, "sums.jsonl")
	writeSumTask(t, dataPath)
	run := func(model, tokens string) (*Result, *logRecorder, string) {
		cfg := DefaultConfig()
		cfg.Model, cfg.Data, cfg.Out = model, dataPath, filepath.Join(t.TempDir(), "out")
		cfg.MaxSteps, cfg.BatchSize, cfg.Threads, cfg.TrainTokens = 2, 8, 2, tokens
		rec := &logRecorder{}
		res, err := Run(context.Background(), cfg, rec)
		if err != nil {
			t.Fatal(err)
		}
		return res, rec, cfg.Out
	}
	res, rec, out := run(model, "")
	if len(res.UntrainedTokens) != 1 || res.UntrainedTokens[0].ID != 2 || len(res.TrainedTokens) != 0 {
		t.Fatalf("untrained %+v, trained %v; want </s> (2) found and not trained", res.UntrainedTokens, res.TrainedTokens)
	}
	warned := false
	for _, l := range rec.lines {
		if strings.Contains(l, "warning") && strings.Contains(l, `"</s>"`) && strings.Contains(l, "--train-tokens auto") && strings.Contains(l, "cosine") {
			warned = true
			t.Log(l)
		}
	}
	if !warned {
		t.Fatalf("no warning naming </s>, the test and the flag: %q", rec.lines)
	}
	if ad, err := lora.Load(out); err != nil || len(ad.Tokens) != 0 {
		t.Fatalf("default run: adapter %v, %d trained token tables", err, len(ad.Tokens))
	}
	res, _, out = run(model, "auto")
	if len(res.TrainedTokens) != 1 || res.TrainedTokens[0] != 2 {
		t.Fatalf("--train-tokens auto trained %v, want [2]", res.TrainedTokens)
	}
	ad, err := lora.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if ids, ok := ad.Config.TrainableTokens.For(lora.EmbedModule); !ok || len(ids) != 1 || ids[0] != 2 || ad.Tokens[lora.EmbedModule] == nil {
		t.Fatalf("adapter: trainable_token_indices %+v, rows %+v", ad.Config.TrainableTokens, ad.Tokens)
	}
	// With the <s> template the untrained </s> is only EOS: noted, and not trained by auto.
	res, _, _ = run(filepath.Join(testenv.Testdata(t), "models", "stories260K"), "auto")
	if len(res.UntrainedTokens) != 1 || res.UntrainedTokens[0].InData || len(res.TrainedTokens) != 0 {
		t.Fatalf("the <s> template: untrained %+v, trained %v", res.UntrainedTokens, res.TrainedTokens)
	}
}

// TestTrainTokensExactMatch is the side-by-side run of issue 19 (not a unit test: set LORAKIT_TRAIN_EM=1; about
// 8 minutes on 2 shared cores): LoRA (r16 α32, lr 3e-3, 600 steps, batch 8) with turns ending in <s> (trained), in </s>
// (untrained) and in </s> with --train-tokens auto, each scored on its training examples and on held-out ones, on
// two tasks: the 41 sums of TestMethodsExactMatch (40 held-out pairs; stories260K does not generalise addition to
// them) and echo, a copy task it does generalise: 400 phrases of 2 to 4 words the model knows, answered with the
// phrase itself, and 40 held-out phrases of the same words that are in no training example. --train-tokens auto
// must reach the exact match of the <s> template on both sets.
func TestTrainTokensExactMatch(t *testing.T) {
	if os.Getenv("LORAKIT_TRAIN_EM") == "" {
		t.Skip("LORAKIT_TRAIN_EM not set")
	}
	t.Run("sums", func(t *testing.T) {
		dir := t.TempDir()
		trainTokensEM(t, "41 sums (40 held out)", writeSumsEM(t, dir, "sums.jsonl", 0), writeSumsEM(t, dir, "held.jsonl", 1))
	})
	t.Run("echo", func(t *testing.T) {
		train, held := writeEchoEM(t, t.TempDir(), 400, 40)
		trainTokensEM(t, "echo, 400 phrases (40 held out)", train, held)
	})
}

// writeSumsEM writes the sums a+b (1 ≤ a, b ≤ 9) with (7a+3b) mod 2 == keep.
func writeSumsEM(t *testing.T, dir, name string, keep int) string {
	t.Helper()
	var b strings.Builder
	for a := 1; a <= 9; a++ {
		for c := 1; c <= 9; c++ {
			if (a*7+c*3)%2 == keep {
				j, _ := json.Marshal(map[string]string{"prompt": fmt.Sprintf("请帮我计算%d+%d等于几。", a, c), "response": fmt.Sprint(a + c)})
				b.Write(append(j, '\n'))
			}
		}
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// echoWords are words of TinyStories (stories260K's pre-training), most of them one or two of its tokens.
var echoWords = strings.Fields(`dog cat ball tree bird car box fish cake hat boat sun toy park book frog duck bear cup
bed house flower girl boy apple kite star shoe door rock bunny truck water food garden sky moon mouse pig bug big
little happy red small funny sad blue kind shiny old new good bad hot cold fast slow tall soft run jump play sing
look find help eat walk swim fly read draw smile mom dad friend baby king Lily Tim Sue Ben Max Anna Tom Sam Mia`)

// writeEchoEM writes the echo task: distinct phrases of 2 to 4 echoWords (seeded), each answered with itself; the
// first n go to the training file, the next held (none of them a training phrase) to the held-out file.
func writeEchoEM(t *testing.T, dir string, n, held int) (string, string) {
	t.Helper()
	rng := rand.New(rand.NewPCG(19, 1))
	seen := map[string]bool{}
	var files [2]strings.Builder
	for k := 0; k < n+held; {
		w := make([]string, 2+rng.IntN(3))
		for i := range w {
			w[i] = echoWords[rng.IntN(len(echoWords))]
		}
		p := strings.Join(w, " ")
		if seen[p] {
			continue
		}
		seen[p] = true
		j, _ := json.Marshal(map[string]string{"prompt": p, "response": p})
		files[min(k/n, 1)].Write(append(j, '\n'))
		k++
	}
	var paths [2]string
	for i, name := range []string{"echo.jsonl", "echo-held.jsonl"} {
		paths[i] = filepath.Join(dir, name)
		if err := os.WriteFile(paths[i], []byte(files[i].String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return paths[0], paths[1]
}

// trainTokensEM trains the three variants on train and scores each on train and held.
func trainTokensEM(t *testing.T, task, train, held string) {
	dir := t.TempDir()
	bos, eos := filepath.Join(testenv.Testdata(t), "models", "stories260K"), eosTemplateModel(t)
	type row struct {
		name, model, tokens string
		train, held         *EvalResult
	}
	rows := []*row{{name: "<s> template", model: bos}, {name: "</s> template", model: eos}, {name: "</s> + --train-tokens auto", model: eos, tokens: "auto"}}
	table := "variant                      train_loss  train_em  held_loss  held_em\n"
	for i, r := range rows {
		cfg := DefaultConfig()
		cfg.Model, cfg.Data, cfg.Out = r.model, train, filepath.Join(dir, fmt.Sprint("run", i))
		cfg.Rank, cfg.Alpha, cfg.BatchSize, cfg.Threads, cfg.LR, cfg.MaxSteps, cfg.WarmupSteps = 16, 32, 8, 2, 3e-3, 600, 30
		cfg.TrainTokens = r.tokens
		if _, err := Run(context.Background(), cfg, nil); err != nil {
			t.Fatal(err)
		}
		var err error
		if r.train, err = Evaluate(context.Background(), EvalConfig{Model: r.model, Adapter: cfg.Out, Data: train, Threads: 2}); err != nil {
			t.Fatal(err)
		}
		if r.held, err = Evaluate(context.Background(), EvalConfig{Model: r.model, Adapter: cfg.Out, Data: held, Threads: 2}); err != nil {
			t.Fatal(err)
		}
		table += fmt.Sprintf("%-27s  %10.3f  %8.3f  %9.3f  %7.3f\n", r.name, r.train.Loss, r.train.ExactMatch, r.held.Loss, r.held.ExactMatch)
	}
	t.Logf("stories260K, %s, LoRA r16 α32, lr 3e-3, 600 steps, batch 8:\n%s", task, table)
	if rows[2].train.ExactMatch < rows[0].train.ExactMatch-0.05 || rows[2].held.ExactMatch < rows[0].held.ExactMatch-0.05 {
		t.Errorf("--train-tokens auto: exact match %.3f (held out %.3f), the <s> template %.3f (%.3f)",
			rows[2].train.ExactMatch, rows[2].held.ExactMatch, rows[0].train.ExactMatch, rows[0].held.ExactMatch)
	}
}
