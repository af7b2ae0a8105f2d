package chat

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/internal/testenv"
)

// sharedDir is the shared data folder: the test skips without LORAKIT_SHARED and fails without its golden/.
func sharedDir(t testing.TB) string { return testenv.Dir(t, "golden") }

// tokenString reads a bos/eos entry of tokenizer_config.json: a string, null or {"content": ...}.
func tokenString(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var o struct {
		Content string `json:"content"`
	}
	if json.Unmarshal(raw, &o) == nil {
		return o.Content
	}
	return ""
}

func loadTemplate(t *testing.T, dir string) *Template {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "tokenizer_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		ChatTemplate json.RawMessage `json:"chat_template"`
		BOS          json.RawMessage `json:"bos_token"`
		EOS          json.RawMessage `json:"eos_token"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("%s: %v", dir, err)
	}
	var src string
	_ = json.Unmarshal(cfg.ChatTemplate, &src)
	tpl, err := New(src, tokenString(cfg.BOS), tokenString(cfg.EOS))
	if err != nil {
		t.Fatalf("%s: %v", dir, err)
	}
	return tpl
}

type goldenCase struct {
	ID                  string          `json:"id"`
	Note                string          `json:"note"`
	Messages            json.RawMessage `json:"messages"`
	AddGenerationPrompt bool            `json:"add_generation_prompt"`
	TemplateKwargs      json.RawMessage `json:"template_kwargs"`
	Rendered            *string         `json:"rendered"`
	Error               string          `json:"error"`
}

func readGolden(t *testing.T, path string) []goldenCase {
	t.Helper()
	out := testenv.ReadJSONL[goldenCase](t, path)
	if len(out) == 0 {
		t.Fatalf("%s: no cases", path)
	}
	return out
}

func TestGoldenChatTemplates(t *testing.T) {
	shared := sharedDir(t)
	files, err := filepath.Glob(filepath.Join(shared, "golden", "chat_templates", "*.jsonl"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden chat templates under %s (%v)", shared, err)
	}
	for _, path := range files {
		family := strings.TrimSuffix(filepath.Base(path), ".jsonl")
		t.Run(family, func(t *testing.T) {
			tpl := loadTemplate(t, filepath.Join(shared, "tokenizers", family))
			for _, c := range readGolden(t, path) {
				got, err := tpl.RenderJSON(c.Messages, c.AddGenerationPrompt, c.TemplateKwargs)
				if c.Error != "" {
					if err == nil {
						t.Errorf("%s %s (%s): want error %q, got none; rendered %q", family, c.ID, c.Note, c.Error, got)
					}
					continue
				}
				if err != nil {
					t.Errorf("%s %s (%s): %v", family, c.ID, c.Note, err)
					continue
				}
				if c.Rendered == nil {
					t.Fatalf("%s %s: golden has neither rendered nor error", family, c.ID)
				}
				if got != *c.Rendered {
					t.Errorf("%s %s (%s):\n got %q\nwant %q", family, c.ID, c.Note, got, *c.Rendered)
				}
			}
		})
	}
}

func TestGoldenStoriesChat(t *testing.T) {
	shared := testenv.Testdata(t)
	tpl := loadTemplate(t, filepath.Join(shared, "models", "stories260K"))
	for i, c := range readGolden(t, filepath.Join(shared, "golden", "stories260K-chat.jsonl")) {
		var msgs []Message
		if err := json.Unmarshal(c.Messages, &msgs); err != nil {
			t.Fatal(err)
		}
		got, err := tpl.Render(msgs, c.AddGenerationPrompt)
		if err != nil {
			t.Errorf("case %d: %v", i, err)
			continue
		}
		if c.Rendered == nil || got != *c.Rendered {
			t.Errorf("case %d:\n got %q\nwant %v", i, got, c.Rendered)
		}
		raw, err := tpl.RenderJSON(c.Messages, c.AddGenerationPrompt, nil)
		if err != nil || raw != got {
			t.Errorf("case %d: RenderJSON %q, %v; Render %q", i, raw, err, got)
		}
	}
}
