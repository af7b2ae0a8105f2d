package serve

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/lorakit/lorakit/internal/testenv"
	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/chat"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/testmodel"
	"github.com/lorakit/lorakit/serve/backend"
)

// TestOpenAINodeE2E drives the server with the official `openai` npm package. It is skipped unless node is
// installed and `require("openai")` resolves (install: npm install --prefix /tmp/lorakit-e2e openai, then run
// with NODE_PATH=/tmp/lorakit-e2e/node_modules).
func TestOpenAINodeE2E(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not installed")
	}
	if err := exec.Command(node, "-e", `require.resolve("openai")`).Run(); err != nil {
		t.Skip("npm package openai not found (npm install --prefix /tmp/lorakit-e2e openai; NODE_PATH=/tmp/lorakit-e2e/node_modules)")
	}
	dir := t.TempDir()
	if err := testmodel.Write(filepath.Join(dir, "model"), testmodel.Default()); err != nil {
		t.Fatal(err)
	}
	m, err := models.Load(filepath.Join(dir, "model"), models.LoadOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	adapters := map[string]string{}
	for i, n := range []string{"a1", "a2", "spare"} {
		p := filepath.Join(dir, "adapters", n)
		writeRandomAdapter(t, m, p, int64(100+i))
		if n != "spare" {
			adapters[n] = p
		}
	}
	expect := map[string]string{}
	ids, err := m.EncodeChat([]chat.Message{{Role: "user", Content: "hello there"}}, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"tiny", "a1", "a2"} {
		o := models.GenerateOptions{MaxTokens: 12}
		if n != "tiny" {
			a, err := lora.Load(adapters[n])
			if err != nil {
				t.Fatal(err)
			}
			o.Adapter = a
		}
		res, err := m.Generate(context.Background(), ids, o)
		if err != nil {
			t.Fatal(err)
		}
		expect[n] = res.Text
	}
	srv, err := New(Config{Model: backend.FromModel(m), ModelName: "tiny", Adapters: adapters, APIKey: "k-e2e",
		AdapterDir: filepath.Join(dir, "adapters")})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	ej, _ := json.Marshal(expect)
	cctx, ccancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer ccancel()
	cmd := exec.CommandContext(cctx, node, filepath.Join("testdata", "e2e", "openai_e2e.cjs"))
	cmd.Env = append(os.Environ(), "LORAKIT_URL=http://"+ln.Addr().String(), "LORAKIT_KEY=k-e2e",
		"LORAKIT_EXPECT="+string(ej), "LORAKIT_SPARE="+filepath.Join(dir, "adapters", "spare"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node e2e failed: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

// TestOpenAINodeTools drives tool calling with the official `openai` npm package (skipped like
// TestOpenAINodeE2E): non-streaming, the SDK's streaming accumulator, a tool-result round trip, a refusal.
func TestOpenAINodeTools(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not installed")
	}
	if err := exec.Command(node, "-e", `require.resolve("openai")`).Run(); err != nil {
		t.Skip("npm package openai not found (npm install --prefix /tmp/lorakit-e2e openai; NODE_PATH=/tmp/lorakit-e2e/node_modules)")
	}
	e := toolEnv(t, nil)
	cctx, ccancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer ccancel()
	cmd := exec.CommandContext(cctx, node, filepath.Join("testdata", "e2e", "openai_tools_e2e.cjs"))
	cmd.Env = append(os.Environ(), "LORAKIT_URL="+e.ts.URL)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node tools e2e failed: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

// TestOpenAINodeStructured drives structured outputs with the official `openai` npm SDK's zod helpers
// (zodResponseFormat + chat.completions.parse, zodFunction tools with tool_choice "required" and named, a tool
// result round trip) against stories260K given a Hermes tool-calling template. Skipped unless node, the openai
// and zod packages and the shared models are there (.ci/install/60-zod.sh adds zod beside openai).
func TestOpenAINodeStructured(t *testing.T) {
	sh := testenv.Shared()
	if sh == "" {
		t.Skip("LORAKIT_SHARED not set")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not installed")
	}
	if err := exec.Command(node, "-e", `require.resolve("openai"); require.resolve("zod")`).Run(); err != nil {
		t.Skip("npm packages openai and zod not found (npm install --prefix /tmp/lorakit-e2e openai@6 zod@4; NODE_PATH=/tmp/lorakit-e2e/node_modules)")
	}
	dir := filepath.Join(t.TempDir(), "stories")
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(sh, "models", "stories260K"))); err != nil {
		t.Fatal(err)
	}
	tmpl, err := os.ReadFile(filepath.Join("..", "models", "chat", "testdata", "qwen25_tools.jinja"))
	if err != nil {
		t.Fatal(err)
	}
	var tc map[string]any
	raw, err := os.ReadFile(filepath.Join(dir, "tokenizer_config.json"))
	if err != nil || json.Unmarshal(raw, &tc) != nil {
		t.Fatalf("tokenizer_config: %v", err)
	}
	tc["chat_template"] = string(tmpl)
	raw, _ = json.Marshal(tc)
	if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	// The tools template's system prompt alone outgrows stories260K's 512 positions (its small vocabulary spells
	// much of it in bytes); RoPE takes longer positions, and the test needs no sensible text.
	var cfg map[string]any
	raw, err = os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil || json.Unmarshal(raw, &cfg) != nil {
		t.Fatalf("config: %v", err)
	}
	cfg["max_position_embeddings"] = 4096
	raw, _ = json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := models.Load(dir, models.LoadOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	srv, err := New(Config{Model: backend.FromModel(m), ModelName: "stories"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	ts := newTS(t, srv)
	cctx, ccancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer ccancel()
	cmd := exec.CommandContext(cctx, node, filepath.Join("testdata", "e2e", "openai_structured_e2e.cjs"))
	cmd.Env = append(os.Environ(), "LORAKIT_URL="+ts.URL)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node structured e2e failed: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
