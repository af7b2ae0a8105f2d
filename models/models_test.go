package models

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/lorakit/lorakit/internal/testenv"
	"github.com/lorakit/lorakit/models/chat"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/nn"
	"github.com/lorakit/lorakit/models/quant"
	"github.com/lorakit/lorakit/models/safetensors"
	"github.com/lorakit/lorakit/models/sample"
	"github.com/lorakit/lorakit/models/testmodel"
	"github.com/lorakit/lorakit/models/tokenizer"
)

// sharedDir is the shared data folder: the test skips without LORAKIT_SHARED and fails without its golden/.
func sharedDir(t testing.TB) string { return testenv.Dir(t, "golden") }

func mustLoad(t testing.TB, dir string, o LoadOptions) *Model {
	t.Helper()
	m, err := Load(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestGoldenGreedyText(t *testing.T) {
	sh := testenv.Testdata(t)
	m := mustLoad(t, filepath.Join(sh, "models", "stories260K"), LoadOptions{Threads: 2})
	if !slices.Equal(m.EOS, []int{2, 1}) {
		t.Errorf("EOS = %v, want [2 1]", m.EOS)
	}
	testenv.EachLine(t, filepath.Join(sh, "golden", "stories260K-greedy.jsonl"), func(line []byte) {
		var g struct {
			Prompt     string `json:"prompt"`
			PromptIDs  []int  `json:"prompt_ids"`
			GreedyIDs  []int  `json:"greedy_ids"`
			GreedyText string `json:"greedy_text"`
		}
		if err := json.Unmarshal(line, &g); err != nil {
			t.Fatal(err)
		}
		ids := m.EncodePrompt(g.Prompt)
		if !slices.Equal(ids, g.PromptIDs) {
			t.Errorf("%q: prompt ids %v, want %v", g.Prompt, ids, g.PromptIDs)
			ids = g.PromptIDs
		}
		var streamed strings.Builder
		res, err := m.Generate(context.Background(), ids, GenerateOptions{MaxTokens: len(g.GreedyIDs), IgnoreEOS: true,
			OnText: func(s string) error { streamed.WriteString(s); return nil }})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(res.IDs, g.GreedyIDs) {
			t.Errorf("%q: ids\n got %v\nwant %v", g.Prompt, res.IDs, g.GreedyIDs)
		}
		if res.Text != g.GreedyText || res.FinishReason != "length" {
			t.Errorf("%q: text %q (%s), want %q", g.Prompt, res.Text, res.FinishReason, g.GreedyText)
		}
		if streamed.String() != res.Text {
			t.Errorf("%q: streamed %q != text %q", g.Prompt, streamed.String(), res.Text)
		}
	})
}

func TestGoldenChat(t *testing.T) {
	sh := testenv.Testdata(t)
	m := mustLoad(t, filepath.Join(sh, "models", "stories260K"), LoadOptions{Threads: 1})
	testenv.EachLine(t, filepath.Join(sh, "golden", "stories260K-chat.jsonl"), func(line []byte) {
		var g struct {
			Messages            []chat.Message `json:"messages"`
			AddGenerationPrompt bool           `json:"add_generation_prompt"`
			IDs                 []int          `json:"ids"`
			GreedyIDs           []int          `json:"greedy_ids"`
		}
		if err := json.Unmarshal(line, &g); err != nil {
			t.Fatal(err)
		}
		ids, err := m.EncodeChat(g.Messages, g.AddGenerationPrompt)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids, g.IDs) {
			t.Errorf("chat ids\n got %v\nwant %v", ids, g.IDs)
		}
		res, err := m.Generate(context.Background(), g.IDs, GenerateOptions{MaxTokens: len(g.GreedyIDs), IgnoreEOS: true})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(res.IDs, g.GreedyIDs) {
			t.Errorf("chat greedy\n got %v\nwant %v", res.IDs, g.GreedyIDs)
		}
		// The greedy continuations never reach the end-of-turn marker, so stopping there changes nothing.
		res, err = m.Generate(context.Background(), g.IDs, GenerateOptions{MaxTokens: len(g.GreedyIDs), IgnoreEOS: true, Chat: true})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(res.IDs, g.GreedyIDs) {
			t.Errorf("chat greedy with turn-end stop\n got %v\nwant %v", res.IDs, g.GreedyIDs)
		}
	})
	// stories260K's end of turn is "\n<s>": generation stops at <s> (BOS, id 1), not at EOS (id 2).
	if te := m.TurnEnd(); !slices.Equal(te.IDs, []int{1}) || te.Text != "" {
		t.Errorf("TurnEnd %+v, want IDs [1]", te)
	}
}

func TestGenerateTurnEnd(t *testing.T) {
	m := mustLoad(t, tiny(t, testmodel.Options{Seed: 4}), LoadOptions{Threads: 1})
	if id, _ := m.Tok.TokenID("<|im_end|>"); !slices.Equal(m.TurnEnd().IDs, []int{id}) {
		t.Fatalf("ChatML TurnEnd %+v, want <|im_end|> id %d", m.TurnEnd(), id)
	}
	prompt := m.EncodePrompt("the dog was")
	base, err := m.Generate(context.Background(), prompt, GenerateOptions{MaxTokens: 30, IgnoreEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	// A template whose end-of-turn marker is plain text (a piece of the greedy text) stops there as a stop string.
	mid := len(base.Text) / 2
	for mid < len(base.Text)-2 && !(isLetter(base.Text[mid]) && isLetter(base.Text[mid+1])) {
		mid++
	}
	marker := base.Text[mid : mid+2]
	tpl, err := chat.New("{% for message in messages %}{{ message['content'] + '"+marker+"' }}{% endfor %}", "<s>", "</s>")
	if err != nil {
		t.Fatal(err)
	}
	if tpl.TurnEnd() != marker {
		t.Skipf("template probe found turn end %q, not %q", tpl.TurnEnd(), marker)
	}
	m.Chat = tpl
	if te := m.TurnEnd(); te.Text != marker || te.IDs != nil {
		t.Fatalf("TurnEnd %+v, want text %q", te, marker)
	}
	r, err := m.Generate(context.Background(), prompt, GenerateOptions{MaxTokens: 30, IgnoreEOS: true, Chat: true})
	if err != nil {
		t.Fatal(err)
	}
	if want := base.Text[:strings.Index(base.Text, marker)]; r.FinishReason != "stop" || r.Text != want {
		t.Fatalf("turn end %q: text %q (%s), want %q", marker, r.Text, r.FinishReason, want)
	}
	// Without Chat the marker means nothing.
	if r, _ := m.Generate(context.Background(), prompt, GenerateOptions{MaxTokens: 30, IgnoreEOS: true}); r.FinishReason != "length" {
		t.Fatalf("plain prompt stopped: %s", r.FinishReason)
	}
}

func isLetter(b byte) bool { return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' }

func tiny(t testing.TB, o testmodel.Options) string {
	t.Helper()
	dir := t.TempDir()
	if err := testmodel.Write(dir, o); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestLoadTiny(t *testing.T) {
	o := testmodel.Options{ModelType: "qwen3", HeadDim: 16, Tied: true, DType: "BF16", Seed: 2}
	m := mustLoad(t, tiny(t, o), LoadOptions{Threads: 2})
	imEnd := testmodel.SpecialID(o, "<|im_end|>")
	if !slices.Contains(m.EOS, imEnd) {
		t.Fatalf("EOS %v lacks <|im_end|> %d", m.EOS, imEnd)
	}
	if !m.Gen.Present || !m.Gen.DoSample || m.Gen.TopK != 20 {
		t.Fatalf("generation config %+v", m.Gen)
	}
	ids, err := m.EncodeChat([]chat.Message{{Role: "user", Content: "hello world"}}, true)
	if err != nil {
		t.Fatal(err)
	}
	text := m.Tok.Decode(ids, false)
	if text != "<|im_start|>user\nhello world<|im_end|>\n<|im_start|>assistant\n" {
		t.Fatalf("chat round trip: %q", text)
	}
	if ids[0] != testmodel.SpecialID(o, "<|im_start|>") {
		t.Fatalf("special token not matched: %v", ids)
	}
	// seeded sampling is reproducible
	so := GenerateOptions{MaxTokens: 20, IgnoreEOS: true, Sampling: sample.Options{Temperature: 1, TopP: 0.95, Seed: 9}}
	a, err := m.Generate(context.Background(), ids, so)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := m.Generate(context.Background(), ids, so)
	if !slices.Equal(a.IDs, b.IDs) || len(a.IDs) != 20 || a.FinishReason != "length" {
		t.Fatalf("seeded: %v vs %v (%s)", a.IDs, b.IDs, a.FinishReason)
	}
}

func TestGenerateStops(t *testing.T) {
	o := testmodel.Options{Seed: 4}
	m := mustLoad(t, tiny(t, o), LoadOptions{Threads: 1})
	prompt := m.EncodePrompt("the dog was")
	base, err := m.Generate(context.Background(), prompt, GenerateOptions{MaxTokens: 30, IgnoreEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(base.IDs) != 30 || len(base.Text) < 4 {
		t.Fatalf("base: %d ids, text %q", len(base.IDs), base.Text)
	}
	// EOS: make the 3rd greedy token an EOS id
	m.EOS = []int{base.IDs[2]}
	r, _ := m.Generate(context.Background(), prompt, GenerateOptions{MaxTokens: 30})
	if r.FinishReason != "stop" || !slices.Equal(r.IDs, base.IDs[:3]) {
		t.Fatalf("eos stop: %v %s", r.IDs, r.FinishReason)
	}
	m.EOS = nil
	// stop string: a piece from the middle of the greedy text
	mid := len(base.Text) / 2
	stop := base.Text[mid : mid+2]
	want := base.Text[:strings.Index(base.Text, stop)]
	var streamed strings.Builder
	r, err = m.Generate(context.Background(), prompt, GenerateOptions{MaxTokens: 30, Stop: []string{"\x00never", stop},
		OnText: func(s string) error { streamed.WriteString(s); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if r.FinishReason != "stop" || r.Text != want || streamed.String() != want {
		t.Fatalf("stop %q: text %q streamed %q want %q (%s)", stop, r.Text, streamed.String(), want, r.FinishReason)
	}
	// callback error and cancellation
	boom := errors.New("boom")
	if _, err := m.Generate(context.Background(), prompt, GenerateOptions{MaxTokens: 30, IgnoreEOS: true,
		OnText: func(string) error { return boom }}); !errors.Is(err, boom) {
		t.Fatalf("callback error: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Generate(ctx, prompt, GenerateOptions{MaxTokens: 5}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancel: %v", err)
	}
	if _, err := m.Generate(context.Background(), nil, GenerateOptions{}); err == nil {
		t.Fatal("empty prompt accepted")
	}
	long := make([]int, 600)
	if _, err := m.Generate(context.Background(), long, GenerateOptions{}); err == nil {
		t.Fatal("over-long prompt accepted")
	}
}

func TestLoadQuantized(t *testing.T) {
	dir := tiny(t, testmodel.Options{Hidden: 64, Intermediate: 128, Seed: 5})
	f := mustLoad(t, dir, LoadOptions{Threads: 1})
	q := mustLoad(t, dir, LoadOptions{Threads: 1, Quant: "nf4"})
	prompt := f.EncodePrompt("hello world")
	lf, err := f.Net.Forward([]llama.Seq{{Tokens: prompt}})
	if err != nil {
		t.Fatal(err)
	}
	lq, err := q.Net.Forward([]llama.Seq{{Tokens: prompt}})
	if err != nil {
		t.Fatal(err)
	}
	var diff, norm float64
	for i := range lf[0][0] {
		d := float64(lf[0][0][i] - lq[0][0][i])
		diff += d * d
		norm += float64(lf[0][0][i]) * float64(lf[0][0][i])
	}
	// random weights amplify the 4-bit error; only check the output is close-ish and not identical
	if _, ok := q.Net.Layers[0].QProj.(*nn.Quantized); !ok {
		t.Fatalf("q_proj is %T", q.Net.Layers[0].QProj)
	}
	if diff == 0 || diff > norm {
		t.Fatalf("nf4 logits: relative squared error %g", diff/norm)
	}
	if _, err := Load(dir, LoadOptions{Quant: "int3"}); err == nil {
		t.Fatal("unknown quant accepted")
	}
}

func TestLoadErrors(t *testing.T) {
	dir := tiny(t, testmodel.Options{})
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Load(t.TempDir(), LoadOptions{}); err == nil || !strings.Contains(err.Error(), "config.json") {
		t.Fatalf("empty dir: %v", err)
	}
	write("generation_config.json", `{"eos_token_id": "x"}`)
	if _, err := Load(dir, LoadOptions{}); err == nil || !strings.Contains(err.Error(), "eos_token_id") {
		t.Fatalf("bad generation config: %v", err)
	}
	os.Remove(filepath.Join(dir, "generation_config.json"))
	m := mustLoad(t, dir, LoadOptions{Threads: 1}) // no generation_config.json: defaults
	if m.Gen.Present || len(m.EOS) == 0 {
		t.Fatalf("defaults: %+v eos %v", m.Gen, m.EOS)
	}
	os.Remove(filepath.Join(dir, "model.safetensors"))
	if _, err := Load(dir, LoadOptions{}); err == nil {
		t.Fatal("missing weights accepted")
	}
	dir2 := tiny(t, testmodel.Options{Vocab: 260})
	cfg, _ := os.ReadFile(filepath.Join(dir2, "config.json"))
	var c map[string]any
	json.Unmarshal(cfg, &c)
	c["vocab_size"] = 259
	cfg, _ = json.Marshal(c)
	os.WriteFile(filepath.Join(dir2, "config.json"), cfg, 0o644)
	if _, err := Load(dir2, LoadOptions{}); err == nil || !strings.Contains(err.Error(), "model.embed_tokens.weight") {
		t.Fatalf("vocab mismatch: %v", err)
	}
}

func TestParseGenerationConfig(t *testing.T) {
	g, err := ParseGenerationConfig([]byte(`{"bos_token_id":1,"eos_token_id":[2,1],"max_length":512}`))
	if err != nil || g.BOSTokenID != 1 || !slices.Equal(g.EOSTokenIDs, []int{2, 1}) || g.MaxLength != 512 || g.DoSample {
		t.Fatalf("%+v %v", g, err)
	}
	if s := g.Sampling(); s.Temperature != 0 {
		t.Fatalf("greedy default: %+v", s)
	}
	g, err = ParseGenerationConfig([]byte(`{"do_sample":true,"temperature":0.6,"top_p":0.95,"eos_token_id":7}`))
	if err != nil || g.Sampling().Temperature != 0.6 || g.Sampling().TopK != 50 || g.EOSTokenIDs[0] != 7 {
		t.Fatalf("%+v %v", g, err)
	}
	for _, bad := range []string{`{"top_p": 2}`, `{"temperature": -1}`, `[`, `{"bos_token_id": "a"}`} {
		if _, err := ParseGenerationConfig([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestLoadPrequantized(t *testing.T) {
	o := testmodel.Options{Hidden: 64, Intermediate: 128, Seed: 6}
	dir := tiny(t, o)
	ref := mustLoad(t, dir, LoadOptions{Threads: 1, Quant: "nf4"})
	// Rewrite the folder the way transformers saves a bitsandbytes NF4 model (double quantisation).
	var ts []safetensors.Tensor
	for _, tn := range testmodel.Tensors(o) {
		if strings.HasSuffix(tn.Name, "_proj.weight") {
			w := make([]float32, len(tn.Data)/4)
			safetensors.Decode(safetensors.F32, tn.Data, w)
			q, err := quant.Quantize4(quant.NF4, w, tn.Shape, 64, false)
			if err != nil {
				t.Fatal(err)
			}
			ts = append(ts, quant.ToTensors(tn.Name, q, "F32")...)
			continue
		}
		ts = append(ts, tn)
	}
	if err := safetensors.Write(filepath.Join(dir, "model.safetensors"), ts, nil); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "config.json")
	b, _ := os.ReadFile(cfgPath)
	b = []byte(strings.Replace(string(b), "{", `{"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": true, "bnb_4bit_quant_type": "nf4"},`, 1))
	os.WriteFile(cfgPath, b, 0o644)
	m := mustLoad(t, dir, LoadOptions{Threads: 1})
	if _, ok := m.Net.Layers[1].DownProj.(*nn.Quantized); !ok || m.Config.Quantization == nil {
		t.Fatalf("down_proj is %T", m.Net.Layers[1].DownProj)
	}
	p := m.EncodePrompt("hello")
	a, err := m.Net.Forward([]llama.Seq{{Tokens: p}})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := ref.Net.Forward([]llama.Seq{{Tokens: p}})
	for i := range a[0][0] {
		if a[0][0][i] != r[0][0][i] {
			t.Fatalf("pre-quantised logits differ from quantise-at-load: %g vs %g", a[0][0][i], r[0][0][i])
		}
	}
}

func TestAdapterCLIPath(t *testing.T) {
	dir := tiny(t, testmodel.Options{Seed: 8})
	m := mustLoad(t, dir, LoadOptions{Threads: 1})
	cfg := lora.NewConfig(4, 8, lora.DefaultTargets)
	a := lora.New(cfg)
	for _, mod := range m.Net.Modules() {
		if mod == "lm_head" {
			continue
		}
		l, _ := m.Net.Linear(mod)
		p := cfg.NewPair(mod, l.In(), l.Out())
		for i := range p.A {
			p.A[i] = float32(i%7) * 0.05
		}
		for i := range p.B {
			p.B[i] = float32(i%5-2) * 0.05
		}
		a.Modules[mod] = p
	}
	adir := t.TempDir()
	if err := a.Save(adir); err != nil {
		t.Fatal(err)
	}
	loaded, err := lora.Load(adir)
	if err != nil {
		t.Fatal(err)
	}
	prompt := m.EncodePrompt("the dog")
	base, _ := m.Generate(context.Background(), prompt, GenerateOptions{MaxTokens: 8, IgnoreEOS: true})
	with, err := m.Generate(context.Background(), prompt, GenerateOptions{MaxTokens: 8, IgnoreEOS: true, Adapter: loaded})
	if err != nil {
		t.Fatal(err)
	}
	lb, _ := m.Net.Forward([]llama.Seq{{Tokens: prompt}})
	la, _ := m.Net.Forward([]llama.Seq{{Tokens: prompt, Adapter: loaded}})
	if slices.Equal(lb[0][0], la[0][0]) {
		t.Fatalf("adapter did not change the logits (ids %v vs %v)", base.IDs, with.IDs)
	}
	// The adapter's rows go through A and B together, grouped over sequences, with the logits of each sequence
	// alone, also in a batch where the adapter's sequences are not adjacent.
	prompts := [][]int{prompt, m.EncodePrompt("a cat sat on"), m.EncodePrompt("x")}
	var want [][]float32
	for _, p := range prompts {
		l, _ := m.Net.Forward([]llama.Seq{{Tokens: p, Adapter: loaded, AllLogits: true}})
		want = append(want, l[0]...)
	}
	batch := []llama.Seq{{Tokens: prompts[0], Adapter: loaded, AllLogits: true}, {Tokens: prompts[1], AllLogits: true},
		{Tokens: prompts[1], Adapter: loaded, AllLogits: true}, {Tokens: prompts[2], Adapter: loaded, AllLogits: true}}
	got, err := m.Net.Forward(batch)
	if err != nil {
		t.Fatal(err)
	}
	rows := append(append(append([][]float32{}, got[0]...), got[2]...), got[3]...)
	for r := range want {
		for i := range want[r] {
			if d := math.Abs(float64(rows[r][i] - want[r][i])); d > 1e-4 {
				t.Fatalf("row %d: grouped LoRA differs from row-by-row by %g", r, d)
			}
		}
	}
}

// TestTurnEndFamilies checks the end-of-turn stop of each shared tokenizer family's chat template.
func TestTurnEndFamilies(t *testing.T) {
	sh := sharedDir(t)
	want := map[string]string{"deepseek_v3": "<｜end▁of▁sentence｜>", "gemma3": "<end_of_turn>", "llama2": "</s>",
		"llama3": "<|eot_id|>", "mistral": "</s>", "qwen3": "<|im_end|>"}
	for fam, tokName := range want {
		dir := filepath.Join(sh, "tokenizers", fam)
		tok, err := tokenizer.Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		tc := tok.Config()
		tpl, err := chat.New(tc.ChatTemplate, tc.BOSToken, tc.EOSToken)
		if err != nil {
			t.Fatalf("%s: %v", fam, err)
		}
		m := &Model{Tok: tok, Chat: tpl, Config: &llama.Config{VocabSize: tok.VocabSize()}}
		te := m.TurnEnd()
		if len(te.IDs) != 1 || tok.Token(te.IDs[0]) != tokName || te.Text != "" {
			t.Errorf("%s: TurnEnd %+v, want the id of %s", fam, te, tokName)
		}
	}
}

// TestLoadInt8Head: the head computed from the int8 copy stays within int8 rounding of the dense head
// (relative error well under 1%, and not zero), and unknown types fail.
func TestLoadInt8Head(t *testing.T) {
	for _, tied := range []bool{true, false} {
		dir := tiny(t, testmodel.Options{Hidden: 64, Intermediate: 128, Seed: 7, Tied: tied, DType: "BF16"})
		f := mustLoad(t, dir, LoadOptions{Threads: 1})
		h := mustLoad(t, dir, LoadOptions{Threads: 1, Head: "int8"})
		if _, ok := h.Net.LMHead.(*nn.Quantized); !ok {
			t.Fatalf("tied=%v: LM head is %T", tied, h.Net.LMHead)
		}
		prompt := f.EncodePrompt("hello world")
		lf, err := f.Net.Forward([]llama.Seq{{Tokens: prompt}})
		if err != nil {
			t.Fatal(err)
		}
		lh, err := h.Net.Forward([]llama.Seq{{Tokens: prompt}})
		if err != nil {
			t.Fatal(err)
		}
		var diff, norm float64
		for v := range lf[0][0] {
			d := float64(lf[0][0][v] - lh[0][0][v])
			diff += d * d
			norm += float64(lf[0][0][v]) * float64(lf[0][0][v])
		}
		if rel := math.Sqrt(diff / norm); rel == 0 || rel > 0.01 {
			t.Fatalf("tied=%v: int8 head logits relative error %g", tied, rel)
		}
	}
	if _, err := Load(tiny(t, testmodel.Options{}), LoadOptions{Head: "int4"}); err == nil {
		t.Fatal("unknown head type accepted")
	}
}

// TestLoadAutoHead: "auto" computes the head from an int8 copy only when the decoder is 4-bit (quantised at
// load here); "stored" and "" keep the stored dense head; an untouched embedding stays dense for lookups.
func TestLoadAutoHead(t *testing.T) {
	dir := tiny(t, testmodel.Options{Hidden: 64, Intermediate: 128, Seed: 7, Tied: true, DType: "BF16"})
	for _, c := range []struct {
		quant, head string
		int8        bool
	}{{"nf4", "auto", true}, {"fp4", "auto", true}, {"", "auto", false}, {"nf4", "stored", false}, {"nf4", "", false}, {"", "int8", true}} {
		m := mustLoad(t, dir, LoadOptions{Threads: 1, Quant: c.quant, Head: c.head})
		q, ok := m.Net.LMHead.(*nn.Quantized)
		if got := ok && q.Q.Type == quant.Int8; got != c.int8 {
			t.Errorf("quant %q head %q: LM head is %T, want int8 %v", c.quant, c.head, m.Net.LMHead, c.int8)
		}
	}
}

// TestLoadCompact: a model loaded with Compact (quantised layers in the dot kernels' layout only, where they run,
// moved with the int8 head into the weights' huge-page arena: residentWeights) gives bit-identical logits on one
// row and a batch, and a DoRA-style read of a compacted layer's rows gives the stored weights.
func TestLoadCompact(t *testing.T) {
	dir := tiny(t, testmodel.Options{Hidden: 64, Intermediate: 128, Seed: 9})
	a := mustLoad(t, dir, LoadOptions{Threads: 1, Quant: "nf4", Head: "auto"})
	b := mustLoad(t, dir, LoadOptions{Threads: 1, Quant: "nf4", Head: "auto", Compact: true})
	prompt := a.EncodePrompt("hello world")
	la, err := a.Net.Forward([]llama.Seq{{Tokens: prompt}})
	if err != nil {
		t.Fatal(err)
	}
	lb, err := b.Net.Forward([]llama.Seq{{Tokens: prompt}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(la[0][0], lb[0][0]) {
		t.Fatal("compacted model's logits differ")
	}
	seqs := func() []llama.Seq { return []llama.Seq{{Tokens: prompt}, {Tokens: prompt[:2]}, {Tokens: prompt[1:]}} }
	if la, err = a.Net.Forward(seqs()); err != nil {
		t.Fatal(err)
	}
	if lb, err = b.Net.Forward(seqs()); err != nil {
		t.Fatal(err)
	}
	for i := range la {
		if !slices.Equal(la[i][0], lb[i][0]) {
			t.Fatalf("batch sequence %d: compacted model's logits differ", i)
		}
	}
	if qs, want := quantWeights(b.Net), compacted(b); b.arena == nil || len(qs) != want || want < 7*len(b.Net.Layers) && want > 0 {
		t.Fatalf("%d quantised weights moved to the arena (arena %v), want every compacted layer (%d)", len(qs), b.arena != nil, want)
	}
	defer func() {
		if err := b.Close(); err != nil || b.arena != nil {
			t.Fatalf("Close: %v; the arena is still mapped: %v", err, b.arena != nil)
		}
	}()
	qa, qb := a.Net.Layers[0].DownProj.(*nn.Quantized), b.Net.Layers[0].DownProj.(*nn.Quantized)
	ra, rb := make([]float32, qa.In()), make([]float32, qb.In())
	for r := 0; r < qa.Out(); r += 7 {
		qa.Row(r, ra)
		qb.Row(r, rb)
		if !slices.Equal(ra, rb) {
			t.Fatalf("row %d of a compacted layer differs", r)
		}
	}
}

// TestLoadResident: with Compact, every dense matrix (f32, bf16, f16; tied or not; one file or shards) is moved
// out of the file mapping (residentWeights) and the model's logits are bit-identical to the mapped model's, on
// one row and on a batch.
func TestLoadResident(t *testing.T) {
	for _, o := range []testmodel.Options{
		{Hidden: 64, Intermediate: 128, Seed: 3, DType: "F32"},
		{Hidden: 64, Intermediate: 128, Seed: 4, DType: "BF16", Tied: true},
		{Hidden: 64, Intermediate: 128, Seed: 5, DType: "F16", Shards: 2, ModelType: "qwen2"},
	} {
		dir := tiny(t, o)
		a := mustLoad(t, dir, LoadOptions{Threads: 1})
		b := mustLoad(t, dir, LoadOptions{Threads: 1, Compact: true})
		ds := denseWeights(b.Net)
		if len(ds) == 0 {
			t.Fatalf("%s: no dense weights", o.DType)
		}
		for _, d := range ds {
			if inMapping(b.Checkpoint(), d) {
				t.Fatalf("%s: a %dx%d matrix still views the file mapping", o.DType, d.Rows, d.Cols)
			}
		}
		for _, d := range denseWeights(a.Net) {
			if !inMapping(a.Checkpoint(), d) {
				t.Fatalf("%s: without Compact a %dx%d matrix does not view the mapping (the check above proves nothing)", o.DType, d.Rows, d.Cols)
			}
		}
		p := a.EncodePrompt("hello world")
		seqs := func() []llama.Seq { return []llama.Seq{{Tokens: p}, {Tokens: p[:3]}} }
		la, err := a.Net.Forward(seqs())
		if err != nil {
			t.Fatal(err)
		}
		lb, err := b.Net.Forward(seqs())
		if err != nil {
			t.Fatal(err)
		}
		for i := range la {
			if !slices.Equal(la[i][0], lb[i][0]) {
				t.Fatalf("%s: sequence %d: logits differ after moving the weights", o.DType, i)
			}
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// inMapping reports whether d's weights lie inside one of ck's mapped files.
func inMapping(ck *safetensors.Checkpoint, d *nn.Dense) bool {
	p := uintptr(unsafe.Pointer(unsafe.SliceData(d.F32)))
	if d.U16 != nil {
		p = uintptr(unsafe.Pointer(unsafe.SliceData(d.U16)))
	}
	for _, name := range ck.Names() {
		raw, err := ck.Bytes(name)
		if err != nil || len(raw) == 0 {
			continue
		}
		lo := uintptr(unsafe.Pointer(&raw[0]))
		if p >= lo && p < lo+uintptr(len(raw)) {
			return true
		}
	}
	return false
}

// compacted counts m's quantised layers in the dot kernels' layout only (the int8 head among them when its rows
// come in tiles of 16).
func compacted(m *Model) int {
	n := 0
	for _, mod := range m.Net.Modules() {
		if l, ok := m.Net.Linear(mod); ok {
			if q, ok := l.(*nn.Quantized); ok && q.Q.Packed == nil {
				n++
			}
		}
	}
	return n
}
