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
