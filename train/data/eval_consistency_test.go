package data_test

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/internal/testenv"
	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/train"
	"github.com/lorakit/lorakit/train/data"
)

// Scores equal `lorakit eval` on the same example, and IFD matches a direct computation on stories260K:
// L(A|Q) over the assistant tokens of the templated conversation, L(A) over BOS + the assistant text.
func TestScoreMatchesEvalAndHandIFD(t *testing.T) {
	shared := testenv.Testdata(t)
	dir := filepath.Join(shared, "models", "stories260K")
	m, err := models.Load(dir, train.BaseOptions(1, false))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	bos, hasBOS := m.Tok.BOS()
	examples := []string{
		`{"prompt":"Tell me a story about a dog.","response":"Once upon a time, there was a little dog."}`,
		`{"prompt":"What did the cat see?","reasoning_content":"The cat looked up.","response":"The cat saw a big bird."}`,
	}
	tmp := t.TempDir()
	for i, line := range examples {
		in := filepath.Join(tmp, "in.jsonl")
		if err := os.WriteFile(in, []byte(line+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(tmp, "out.jsonl")
		_, err := data.ScoreFile(in, out, data.ScoreOptions{Tok: m.Tok, Tpl: m.Chat, BOS: bos, HasBOS: hasBOS,
			Scorer: &data.ModelScorer{Net: m.Net}, MaxSeqLen: 4096, Force: true}) // one scratch output per example
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(out)
		_, sc, err := data.SplitScored([]byte(strings.TrimSpace(string(b))))
		if err != nil {
			t.Fatal(err)
		}
		ev, err := train.EvaluateModel(context.Background(), m, nil, train.EvalConfig{Data: in, NoGenerate: true})
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(ev.Loss-sc.NLL) > 1e-5 || ev.Tokens != sc.ScoredTokens {
			t.Errorf("example %d: eval loss %v (%d tokens) vs score nll %v (%d tokens)", i, ev.Loss, ev.Tokens, sc.NLL, sc.ScoredTokens)
		}
		// by hand
		ex, lerr := data.ParseLine([]byte(line), "x", 1)
		if lerr != nil {
			t.Fatal(lerr)
		}
		text, spans, err := m.Chat.RenderWithSpans(ex.Messages, false)
		if err != nil {
			t.Fatal(err)
		}
		var resp string
		for _, sp := range spans {
			resp += text[sp[0]:sp[1]]
		}
		enc, err := data.Encode(m.Tok, m.Chat, ex, 0, false)
		if err != nil {
			t.Fatal(err)
		}
		cond := meanNLL(t, m.Net, enc.IDs, enc.Mask)
		alone := append([]int{bos}, m.Tok.Encode(resp, false)...)
		mask := make([]bool, len(alone))
		for j := range len(alone) - 1 {
			mask[j] = true
		}
		al := meanNLL(t, m.Net, alone, mask)
		if math.Abs(cond-sc.NLL) > 1e-6 || math.Abs(al-sc.NLLAlone) > 1e-6 || math.Abs(cond/al-sc.IFD) > 1e-6 {
			t.Errorf("example %d: hand nll %v alone %v ifd %v; score %+v", i, cond, al, cond/al, sc)
		}
		t.Logf("example %d: nll %.4f nll_alone %.4f ifd %.4f (%d response tokens)", i, sc.NLL, sc.NLLAlone, sc.IFD, sc.ScoredTokens)
	}
}

func meanNLL(t *testing.T, net *llama.Model, ids []int, mask []bool) float64 {
	t.Helper()
	lg, err := net.Forward([]llama.Seq{{Tokens: ids, AllLogits: true}})
	if err != nil {
		t.Fatal(err)
	}
	s, n := 0.0, 0
	for i, row := range lg[0] {
		if i+1 >= len(ids) || !mask[i] {
			continue
		}
		mx := math.Inf(-1)
		for _, v := range row {
			mx = math.Max(mx, float64(v))
		}
		z := 0.0
		for _, v := range row {
			z += math.Exp(float64(v) - mx)
		}
		s += mx + math.Log(z) - float64(row[ids[i+1]])
		n++
	}
	return s / float64(n)
}

// With an adapter, score still equals eval (and differs from the base).
func TestScoreWithAdapterMatchesEval(t *testing.T) {
	shared := testenv.Testdata(t)
	m, err := models.Load(filepath.Join(shared, "models", "stories260K"), train.BaseOptions(1, false))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cfg := lora.Config{PeftType: "LORA", TaskType: "CAUSAL_LM", R: 2, Alpha: 4, TargetModules: []string{"q_proj", "down_proj"}}
	ad := lora.New(cfg)
	for _, mod := range []string{"model.layers.0.self_attn.q_proj", "model.layers.3.mlp.down_proj"} {
		l, ok := m.Net.Linear(mod)
		if !ok {
			t.Fatalf("no %s", mod)
		}
		p := cfg.NewPair(mod, l.In(), l.Out())
		for i := range p.A {
			p.A[i] = float32(i%7-3) / 10
		}
		for i := range p.B {
			p.B[i] = float32(i%5-2) / 10
		}
		ad.Modules[mod] = p
	}
	in := filepath.Join(t.TempDir(), "in.jsonl")
	if err := os.WriteFile(in, []byte(`{"prompt":"Tell me a story.","response":"Once upon a time there was a cat."}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bos, _ := m.Tok.BOS()
	score := func(delta llama.Delta) *data.Score {
		out := filepath.Join(t.TempDir(), "out.jsonl")
		if _, err := data.ScoreFile(in, out, data.ScoreOptions{Tok: m.Tok, Tpl: m.Chat, BOS: bos, HasBOS: true,
			Scorer: &data.ModelScorer{Net: m.Net, Adapter: delta}, MaxSeqLen: 4096}); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(out)
		_, sc, err := data.SplitScored([]byte(strings.TrimSpace(string(b))))
		if err != nil {
			t.Fatal(err)
		}
		return sc
	}
	base, adapted := score(nil), score(ad)
	ev, err := train.EvaluateModel(context.Background(), m, ad, train.EvalConfig{Data: in, NoGenerate: true})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(ev.Loss-adapted.NLL) > 1e-5 || math.Abs(base.NLL-adapted.NLL) < 1e-4 {
		t.Fatalf("eval %v adapted %v base %v", ev.Loss, adapted.NLL, base.NLL)
	}
}
