package data

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/internal/testenv"
	"github.com/lorakit/lorakit/models/chat"
	"github.com/lorakit/lorakit/models/tokenizer"
)

// sharedDir is the shared data folder: the test skips without LORAKIT_SHARED and fails without its golden/.
func sharedDir(t testing.TB) string { return testenv.Dir(t, "golden") }

func loadTokTpl(t *testing.T, dir string) (*tokenizer.Tokenizer, *chat.Template) {
	t.Helper()
	tok, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := tok.Config()
	tpl, err := chat.New(c.ChatTemplate, c.BOSToken, c.EOSToken)
	if err != nil {
		t.Fatal(err)
	}
	return tok, tpl
}

type goldenLine struct {
	ID                  string          `json:"id"`
	Messages            json.RawMessage `json:"messages"`
	AddGenerationPrompt bool            `json:"add_generation_prompt"`
	Rendered            string          `json:"rendered"`
	IDs                 []int           `json:"ids"`
	Error               string          `json:"error"`
	TemplateKwargs      json.RawMessage `json:"template_kwargs"`
}

func readGoldenLines(t *testing.T, path string) []goldenLine {
	t.Helper()
	out := testenv.ReadJSONL[goldenLine](t, path)
	if len(out) == 0 {
		t.Fatalf("%s: empty", path)
	}
	return out
}

// The stories260K chat golden: template text and ids (rendered text encoded without special tokens).
func TestGoldenStoriesChatIDs(t *testing.T) {
	shared := testenv.Testdata(t)
	tok, tpl := loadTokTpl(t, filepath.Join(shared, "models", "stories260K"))
	for i, g := range readGoldenLines(t, filepath.Join(shared, "golden", "stories260K-chat.jsonl")) {
		var msgs []chat.Message
		if err := json.Unmarshal(g.Messages, &msgs); err != nil {
			t.Fatal(err)
		}
		text, err := tpl.Render(msgs, g.AddGenerationPrompt)
		if err != nil || text != g.Rendered {
			t.Fatalf("case %d: %q %v", i, text, err)
		}
		ids := tok.Encode(text, false)
		if !slices.Equal(ids, g.IDs) {
			t.Errorf("case %d: ids\n got %v\nwant %v", i, ids, g.IDs)
		}
	}
}

// On every golden conversation that has assistant turns: the loss tokens cover each assistant message's
// (stripped) content and the end-of-turn marker, and no loss token lies in a user turn.
func TestGoldenSpanAlignment(t *testing.T) {
	shared := sharedDir(t)
	fams, _ := filepath.Glob(filepath.Join(shared, "golden", "chat_templates", "*.jsonl"))
	if len(fams) == 0 {
		t.Fatal("no goldens")
	}
	for _, path := range fams {
		fam := strings.TrimSuffix(filepath.Base(path), ".jsonl")
		tok, tpl := loadTokTpl(t, filepath.Join(shared, "tokenizers", fam))
		if tpl.TurnEnd() == "" {
			t.Errorf("%s: no end-of-turn marker found", fam)
		}
		checked, straddle := 0, 0
		cases := readGoldenLines(t, path)
		for _, extra := range []string{
			`[{"role":"user","content":"Hi there"},{"role":"assistant","content":"Hello! How can I help?"}]`,
			`[{"role":"system","content":"Be nice."},{"role":"user","content":"What is 2+2?"},{"role":"assistant","content":" It is 4. ","reasoning_content":"Two plus two."},{"role":"user","content":"And 3+3?"},{"role":"assistant","content":"6"}]`,
			`[{"role":"user","content":"数一数"},{"role":"assistant","content":"一二三\n四五"}]`,
		} {
			cases = append(cases, goldenLine{ID: "synthetic", Messages: json.RawMessage(extra)})
		}
		for _, g := range cases {
			var msgs []chat.Message
			if g.Error != "" || json.Unmarshal(g.Messages, &msgs) != nil {
				continue
			}
			ex := &Example{Messages: msgs}
			if err := checkOrder(msgs); err != nil {
				continue
			}
			enc, err := Encode(tok, tpl, ex, 0, false)
			if err != nil {
				t.Errorf("%s %s: %v", fam, g.ID, err)
				continue
			}
			// the ids are the whole string's encoding
			text, spans, _ := tpl.RenderWithSpans(msgs, false)
			if !slices.Equal(enc.IDs, tok.Encode(text, false)) {
				t.Errorf("%s %s: ids differ from encoding the whole text", fam, g.ID)
			}
			// segment-wise encoding: does it agree? (informational)
			var seg []int
			prev := 0
			for _, sp := range spans {
				seg = append(seg, tok.Encode(text[prev:sp[0]], false)...)
				seg = append(seg, tok.Encode(text[sp[0]:sp[1]], false)...)
				prev = sp[1]
			}
			seg = append(seg, tok.Encode(text[prev:], false)...)
			if !slices.Equal(seg, enc.IDs) {
				straddle++
			}
			var target []int
			for i, m := range enc.Mask {
				if m {
					target = append(target, enc.IDs[i+1])
				}
			}
			got := tok.Decode(target, false)
			for _, m := range msgs {
				if m.Role == "assistant" {
					c := strings.TrimSpace(m.Content)
					if i := strings.LastIndex(c, "</think>"); i >= 0 && tpl.SupportsReasoning() {
						c = strings.TrimSpace(c[i+len("</think>"):])
					}
					if !strings.Contains(got, c) {
						t.Errorf("%s %s: loss text %q lacks assistant content %q", fam, g.ID, got, c)
					}
				}
				if m.Role == "user" && len(m.Content) > 3 && strings.Contains(got, m.Content) {
					t.Errorf("%s %s: loss text %q contains user content %q", fam, g.ID, got, m.Content)
				}
			}
			if !strings.Contains(got, tpl.TurnEnd()) {
				t.Errorf("%s %s: loss text %q lacks end-of-turn %q", fam, g.ID, got, tpl.TurnEnd())
			}
			checked++
		}
		t.Logf("%s: %d conversations checked; segment-wise encoding differs from whole-string in %d", fam, checked, straddle)
	}
}

// Every golden chat-template case: our rendering, encoded without special tokens, gives the golden ids
// (what apply_chat_template(tokenize=True) returns).
func TestGoldenChatTemplateIDs(t *testing.T) {
	shared := sharedDir(t)
	fams, _ := filepath.Glob(filepath.Join(shared, "golden", "chat_templates", "*.jsonl"))
	if len(fams) == 0 {
		t.Fatal("no goldens")
	}
	for _, path := range fams {
		fam := strings.TrimSuffix(filepath.Base(path), ".jsonl")
		tok, tpl := loadTokTpl(t, filepath.Join(shared, "tokenizers", fam))
		n := 0
		for _, g := range readGoldenLines(t, path) {
			if g.Error != "" {
				continue
			}
			text, err := tpl.RenderJSON(g.Messages, g.AddGenerationPrompt, g.TemplateKwargs)
			if err != nil {
				t.Errorf("%s %s: %v", fam, g.ID, err)
				continue
			}
			if ids := tok.Encode(text, false); !slices.Equal(ids, g.IDs) {
				t.Errorf("%s %s: ids\n got %v\nwant %v", fam, g.ID, ids, g.IDs)
			}
			n++
		}
		t.Logf("%s: %d cases", fam, n)
	}
}
