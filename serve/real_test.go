package serve

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/chat"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/testmodel"
	"github.com/lorakit/lorakit/serve/backend"
	"github.com/lorakit/lorakit/serve/engine"
	"github.com/lorakit/lorakit/serve/openai"
)

// spyModel records which adapters shared each Forward call.
type spyModel struct {
	Model
	mu    sync.Mutex
	mixed int
}

func (s *spyModel) Forward(rows []engine.Row) ([][]float32, error) {
	seen := map[engine.Delta]bool{}
	for _, r := range rows {
		seen[r.Adapter] = true
	}
	s.mu.Lock()
	if len(seen) >= 3 {
		s.mixed++
	}
	s.mu.Unlock()
	return s.Model.Forward(rows)
}

// writeRandomAdapter saves a rank-4 adapter on every attention and MLP projection with non-zero B.
func writeRandomAdapter(t testing.TB, m *models.Model, dir string, seed int64) {
	t.Helper()
	writeRandomAdapterR(t, m, dir, seed, 4, 0.5)
}

// writeRandomAdapter16 is a rank-16 adapter with small weights (for the load benchmark).
func writeRandomAdapter16(t testing.TB, m *models.Model, dir string, seed int64) {
	t.Helper()
	writeRandomAdapterR(t, m, dir, seed, 16, 0.02)
}

func writeRandomAdapterR(t testing.TB, m *models.Model, dir string, seed int64, r int, std float64) {
	t.Helper()
	cfg := lora.NewConfig(r, float64(2*r), []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
	a := lora.New(cfg)
	rng := rand.New(rand.NewSource(seed))
	for _, mod := range m.Net.Modules() {
		if !cfg.Targets(mod) {
			continue
		}
		l, _ := m.Net.Linear(mod)
		p := cfg.NewPair(mod, l.In(), l.Out())
		for i := range p.A {
			p.A[i] = float32(rng.NormFloat64() * std)
		}
		for i := range p.B {
			p.B[i] = float32(rng.NormFloat64() * std)
		}
		a.Modules[mod] = p
	}
	if len(a.Modules) == 0 {
		t.Fatal("adapter targets no module")
	}
	if err := a.Save(dir); err != nil {
		t.Fatal(err)
	}
}

func TestGreedyMatchesGenerateWithMixedAdapters(t *testing.T) {
	dir := t.TempDir()
	if err := testmodel.Write(filepath.Join(dir, "model"), testmodel.Default()); err != nil {
		t.Fatal(err)
	}
	m, err := models.Load(filepath.Join(dir, "model"), models.LoadOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	names := []string{"a1", "a2"}
	adapters := map[string]string{}
	for i, n := range names {
		p := filepath.Join(dir, n)
		writeRandomAdapter(t, m, p, int64(i+7))
		adapters[n] = p
	}
	spy := &spyModel{Model: backend.FromModel(m)}
	srv, err := New(Config{Model: spy, ModelName: "tiny", Adapters: adapters, MaxBatch: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	e := &testEnv{srv: srv, ts: newTS(t, srv)}

	prompts := []string{"hello there", "the quick brown fox", "abc"}
	want := map[string]string{}
	for _, model := range []string{"tiny", "a1", "a2"} {
		var d *lora.Adapter
		if model != "tiny" {
			if d, err = lora.Load(adapters[model]); err != nil {
				t.Fatal(err)
			}
		}
		for _, p := range prompts {
			ids, err := m.EncodeChat([]chat.Message{{Role: "user", Content: p}}, true)
			if err != nil {
				t.Fatal(err)
			}
			o := models.GenerateOptions{MaxTokens: 12}
			if d != nil {
				o.Adapter = d
			}
			res, err := m.Generate(context.Background(), ids, o)
			if err != nil {
				t.Fatal(err)
			}
			want[model+"|"+p] = res.Text
		}
	}
	if want["a1|abc"] == want["tiny|abc"] && want["a2|abc"] == want["tiny|abc"] {
		t.Fatal("adapters do not change the output; the test would prove nothing")
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for rep := 0; rep < 2; rep++ {
		for k := range want {
			wg.Add(1)
			go func(k string) {
				defer wg.Done()
				model, p, _ := strings.Cut(k, "|")
				st, b := e.postNoT(chatBody(model, p, `"temperature":0,"max_tokens":12`))
				if st != 200 {
					errs <- fmt.Errorf("%s: %d %s", k, st, b)
					return
				}
				got, _ := decodeMap(b)["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)["content"].(string)
				if got != want[k] {
					errs <- fmt.Errorf("%s: server %q, Generate %q", k, got, want[k])
				}
			}(k)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	spy.mu.Lock()
	defer spy.mu.Unlock()
	if spy.mixed == 0 {
		t.Error("no Forward call held base, a1 and a2 rows together")
	}
}

func TestRenderChatKwargs(t *testing.T) {
	dir := t.TempDir()
	if err := testmodel.Write(dir, testmodel.Default()); err != nil {
		t.Fatal(err)
	}
	m, err := models.Load(dir, models.LoadOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	b := backend.FromModel(m)
	msgs := []openai.Message{{Role: "system", Content: "be brief"}, {Role: "user", Content: "hi <b>"}}
	p1, err1 := b.RenderChat(msgs, nil, nil)
	p2, err2 := b.RenderChat(msgs, nil, []byte(`{"enable_thinking":false}`))
	if err1 != nil || err2 != nil || p1 != p2 || !strings.HasSuffix(p1, "<|im_start|>assistant\n") {
		t.Fatalf("%q %v / %q %v", p1, err1, p2, err2)
	}
}

func TestBF16AdaptersMatchF32(t *testing.T) {
	dir := t.TempDir()
	if err := testmodel.Write(filepath.Join(dir, "m"), testmodel.Default()); err != nil {
		t.Fatal(err)
	}
	m, err := models.Load(filepath.Join(dir, "m"), models.LoadOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	writeRandomAdapter(t, m, filepath.Join(dir, "a"), 3)
	logits := func(dtype string, withAdapter bool) []float32 {
		be, err := backend.FromModelDType(m, dtype)
		if err != nil {
			t.Fatal(err)
		}
		row := engine.Row{Tokens: []int{5, 6, 7, 8, 9}, State: be.NewState(64)}
		if withAdapter {
			if row.Adapter, err = be.LoadAdapter(filepath.Join(dir, "a")); err != nil {
				t.Fatal(err)
			}
		}
		out, err := be.Forward([]engine.Row{row, {Tokens: []int{1, 2}, State: be.NewState(64), Adapter: row.Adapter}})
		if err != nil {
			t.Fatal(err)
		}
		return out[0]
	}
	base, f32, bf16 := logits("f32", false), logits("f32", true), logits("bf16", true)
	var effect, diff float64
	for i := range base {
		effect = max(effect, float64(abs32(f32[i]-base[i])))
		diff = max(diff, float64(abs32(f32[i]-bf16[i])))
	}
	t.Logf("adapter effect on logits %.4f, bf16 vs f32 difference %.5f", effect, diff)
	if effect < 0.1 || diff > effect/20 {
		t.Fatalf("adapter effect %.4f, bf16 vs f32 difference %.4f", effect, diff)
	}
	if _, err := backend.FromModelDType(m, "f8"); err == nil {
		t.Fatal("bad dtype accepted")
	}
}

func abs32(x float32) float32 {
	if x < 0 {
		return -x
	}
	return x
}

// A real model whose tokenizer_config carries Qwen2.5's tool template: tools, tool calls and results reach
// the prompt and the Hermes parser is chosen; the plain ChatML template refuses tools with a 400.
func TestRealModelTools(t *testing.T) {
	dir := t.TempDir()
	if err := testmodel.Write(dir, testmodel.Default()); err != nil {
		t.Fatal(err)
	}
	plain, err := models.Load(dir, models.LoadOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	srv, err := New(Config{Model: backend.FromModel(plain), ModelName: "tiny"})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	body := `{"model":"tiny","max_tokens":2,"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]}`
	resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(b), "cannot take tools") || !strings.Contains(string(b), `"param":"tools"`) {
		t.Fatalf("ChatML template with tools: %d %s", resp.StatusCode, b)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	src, err := os.ReadFile(filepath.Join("..", "models", "chat", "testdata", "qwen25_tools.jinja"))
	if err != nil {
		t.Fatal(err)
	}
	var tc map[string]any
	raw, err := os.ReadFile(filepath.Join(dir, "tokenizer_config.json"))
	if err != nil || json.Unmarshal(raw, &tc) != nil {
		t.Fatalf("tokenizer_config: %v", err)
	}
	tc["chat_template"] = string(src)
	raw, _ = json.Marshal(tc)
	if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := models.Load(dir, models.LoadOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	be := backend.FromModel(m)
	if p := be.ToolParser(); p != openai.ToolParserHermes {
		t.Fatalf("parser %q", p)
	}
	req, oe := openai.DecodeChat([]byte(`{"model":"tiny","messages":[{"role":"user","content":"Weather in Paris?"},`+
		`{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"}}]},`+
		`{"role":"tool","tool_call_id":"call_1","content":"sunny"}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]}`), 0)
	if oe != nil {
		t.Fatal(oe)
	}
	p, err := be.RenderChat(req.Messages, req.Tools, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`<tools>` + "\n" + `{"type": "function", "function": {"name": "get_weather"`,
		"<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>",
		"<tool_response>\nsunny\n</tool_response><|im_end|>\n<|im_start|>assistant\n"} {
		if !strings.Contains(p, want) {
			t.Fatalf("prompt lacks %q:\n%s", want, p)
		}
	}
}
