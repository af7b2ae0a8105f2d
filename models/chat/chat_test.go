package chat

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestDefaultTemplate(t *testing.T) {
	tpl, err := New("", "<s>", "</s>")
	if err != nil {
		t.Fatal(err)
	}
	if !tpl.IsDefault() || tpl.SupportsReasoning() {
		t.Fatalf("default=%v reasoning=%v", tpl.IsDefault(), tpl.SupportsReasoning())
	}
	msgs := []Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi"}, {Role: "assistant", Content: "Hello"}, {Role: "user", Content: "Bye"}}
	got, err := tpl.Render(msgs, true)
	if err != nil {
		t.Fatal(err)
	}
	want := "<s>Be brief.\n\n### User:\nHi\n\n### Assistant:\nHello</s>\n\n### User:\nBye\n\n### Assistant:\n"
	if got != want {
		t.Fatalf("got %q want %q", got, want)
	}
	if tpl.GenerationPrompt() != "### Assistant:\n" || tpl.TurnEnd() != "</s>" {
		t.Fatalf("gen %q end %q", tpl.GenerationPrompt(), tpl.TurnEnd())
	}
}

func TestSpansDefaultWithReasoning(t *testing.T) {
	tpl, err := New("", "<s>", "</s>")
	if err != nil {
		t.Fatal(err)
	}
	msgs := []Message{{Role: "user", Content: "Q"}, {Role: "assistant", Content: "A", ReasoningContent: "R"}, {Role: "user", Content: "Q2"}, {Role: "assistant", Content: ""}}
	text, spans, err := tpl.RenderWithSpans(msgs, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(spans) != 2 {
		t.Fatalf("spans %v", spans)
	}
	if got := text[spans[0][0]:spans[0][1]]; got != "<think>\nR\n</think>\n\nA</s>" {
		t.Errorf("span 0 = %q", got)
	}
	if got := text[spans[1][0]:spans[1][1]]; got != "</s>" {
		t.Errorf("span 1 = %q (empty content keeps the end-of-turn)", got)
	}
	// Render stays faithful: a template without reasoning support drops reasoning_content
	plain, _ := tpl.Render(msgs, false)
	if strings.Contains(plain, "<think>") {
		t.Errorf("Render folded reasoning: %q", plain)
	}
}

const qwenLike = `{%- for message in messages %}{%- if message.role == 'assistant' %}` +
	`{%- set reasoning = message.reasoning_content if message.reasoning_content is defined else '' %}` +
	`{{- '<|im_start|>assistant\n<think>\n' + reasoning.strip('\n') + '\n</think>\n\n' + message.content + '<|im_end|>\n' }}` +
	`{%- else %}{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}{%- endif %}{%- endfor %}` +
	`{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}`

func TestSpansReasoningTemplate(t *testing.T) {
	tpl, err := New(qwenLike, "", "<|im_end|>")
	if err != nil {
		t.Fatal(err)
	}
	if !tpl.SupportsReasoning() {
		t.Fatal("reasoning support not detected")
	}
	msgs := []Message{{Role: "user", Content: "Q"}, {Role: "assistant", Content: "A", ReasoningContent: "think hard"}}
	text, spans, err := tpl.RenderWithSpans(msgs, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(spans) != 1 || text[spans[0][0]:spans[0][1]] != "<think>\nthink hard\n</think>\n\nA<|im_end|>" {
		t.Fatalf("spans %v in %q", spans, text)
	}
	if !strings.HasSuffix(text[:spans[0][0]], "<|im_start|>assistant\n") {
		t.Fatalf("span starts at %d in %q", spans[0][0], text)
	}
}

func TestPythonWhitespaceAndNone(t *testing.T) {
	tpl, err := New(`{% for m in messages %}[{{ m.content | trim }}|{{ m.content.strip() }}|{{ m.content.lstrip() }}|{{ m.content.rstrip() }}|{{ m.content | trim('x') }}]{% endfor %}`, "", "")
	if err != nil {
		t.Fatal(err)
	}
	got, err := tpl.Render([]Message{{Role: "user", Content: "\x1c\u3000 a b\u2003\x1f"}}, false)
	if err != nil {
		t.Fatal(err)
	}
	want := "[a b|a b|a b\u2003\x1f|\x1c\u3000 a b|\x1c\u3000 a b\u2003\x1f]"
	if got != want {
		t.Fatalf("got %q want %q", got, want)
	}
	// strings and text outside tags are left alone
	tpl, err = New(`in x {{ 'in messages .strip()' }}{% if 'a' in messages[0].content %}yes{% endif %}`, "", "")
	if err != nil {
		t.Fatal(err)
	}
	got, err = tpl.Render([]Message{{Role: "user", Content: "cat"}}, false)
	if err != nil || got != "in x in messages .strip()yes" {
		t.Fatalf("got %q, %v", got, err)
	}
	// `in None` fails like Python
	tpl, err = New(`{% for m in messages %}{% if 'x' in m.content %}y{% endif %}{% endfor %}`, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tpl.RenderJSON(json.RawMessage(`[{"role":"assistant","content":null}]`), false, nil); err == nil || !strings.Contains(err.Error(), "NoneType") {
		t.Fatalf("want NoneType error, got %v", err)
	}
}

func TestRenderJSONKeyOrderAndKwargs(t *testing.T) {
	tpl, err := New(`{{ messages[0].args | tojson }}{% if enable_thinking is defined and enable_thinking is false %}!{% endif %}`, "", "")
	if err != nil {
		t.Fatal(err)
	}
	got, err := tpl.RenderJSON(json.RawMessage(`[{"role":"user","args":{"z":1,"a":2.5}}]`), false, json.RawMessage(`{"enable_thinking":false}`))
	if err != nil {
		t.Fatal(err)
	}
	if got != `{"z": 1, "a": 2.5}!` {
		t.Fatalf("got %q", got)
	}
	if _, err := tpl.RenderJSON(json.RawMessage(`{"role":"user"}`), false, nil); err == nil {
		t.Fatal("want error for non-array messages")
	}
}

func TestBadTemplates(t *testing.T) {
	if _, err := New("{% for %}", "", ""); err == nil {
		t.Error("want compile error")
	}
	tpl, err := New(`{{ raise_exception('nope') }}`, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tpl.Render(nil, false); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("want raise_exception error, got %v", err)
	}
	if _, _, err := tpl.RenderWithSpans([]Message{{Role: "assistant", Content: "x"}}, false); err == nil {
		t.Error("want error from RenderWithSpans")
	}
}

// A template that ignores reasoning_content and cuts everything up to "</think>" out of the content (as the
// R1 distill templates do) must not lose the reasoning from training text.
func TestSpansReasoningCutByTemplate(t *testing.T) {
	src := `{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}{{ '<U>' + m.content }}` +
		`{% else %}{% set c = m.content %}{% if '</think>' in c %}{% set c = c.split('</think>')[-1] %}{% endif %}` +
		`{{ '<A>' + c + eos_token }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<A><think>\n' }}{% endif %}`
	tpl, err := New(src, "<s>", "</s>")
	if err != nil {
		t.Fatal(err)
	}
	msgs := []Message{{Role: "user", Content: "Q1"}, {Role: "assistant", Content: "A1", ReasoningContent: "R1"},
		{Role: "user", Content: "Q2"}, {Role: "assistant", Content: "A2", ReasoningContent: "R2"}}
	text, spans, err := tpl.RenderWithSpans(msgs, false)
	if err != nil {
		t.Fatal(err)
	}
	want := "<s><U>Q1<A><think>\nR1\n</think>\n\nA1</s><U>Q2<A><think>\nR2\n</think>\n\nA2</s>"
	if text != want || len(spans) != 2 {
		t.Fatalf("got %q %v", text, spans)
	}
	for i, w := range []string{"<think>\nR1\n</think>\n\nA1</s>", "<think>\nR2\n</think>\n\nA2</s>"} {
		if got := text[spans[i][0]:spans[i][1]]; got != w {
			t.Errorf("span %d = %q want %q", i, got, w)
		}
	}
}

func TestStringLineContinuation(t *testing.T) {
	tpl, err := New("{% set s = \"one \\\ntwo\" %}{{ s }}|{{ 'a\\\\b' }}", "", "")
	if err != nil {
		t.Fatal(err)
	}
	got, err := tpl.Render(nil, false)
	if err != nil || got != `one two|a\b` {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestFilteredPairLoop(t *testing.T) {
	tpl, err := New(`{%- for key, val in messages[0].items() if key != "role" and val != 'x' -%}{{ key }}={{ val }}{{ ',' if not loop.last }} {% endfor %}|{{ key }}`, "", "")
	if err != nil {
		t.Fatal(err)
	}
	got, err := tpl.RenderJSON([]byte(`[{"role":"user","content":"c","x":"x","name":"n"}]`), false, nil)
	if err != nil || got != "content=c, name=n |" {
		t.Fatalf("got %q, %v", got, err)
	}
}

// Phi-style: the conversation ends with eos_token after the last turn's end marker; every assistant
// turn's span must end with the marker itself.
func TestTurnEndBeforeClosingEOS(t *testing.T) {
	src := `{% for m in messages %}{{ '<|' + m.role + '|>' + m.content + '<|end|>' }}{% endfor %}` +
		`{% if add_generation_prompt %}{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}`
	tpl, err := New(src, "", "<|endoftext|>")
	if err != nil {
		t.Fatal(err)
	}
	if tpl.TurnEnd() != "<|end|>" {
		t.Fatalf("turn end %q", tpl.TurnEnd())
	}
	text, spans, err := tpl.RenderWithSpans([]Message{{Role: "user", Content: "a"}, {Role: "assistant", Content: "b"},
		{Role: "user", Content: "c"}, {Role: "assistant", Content: "d"}}, false)
	if err != nil || len(spans) != 2 || text[spans[0][0]:spans[0][1]] != "b<|end|>" || text[spans[1][0]:spans[1][1]] != "d<|end|>" {
		t.Fatalf("%q %v %v", text, spans, err)
	}
	if markerPrefix("\n<s>", "\n<s>### user") != 4 || markerPrefix("<|im_end|>\n", "<|im_end|>\n<|im_start|>") != 11 {
		t.Fatal("markerPrefix")
	}
}

func TestNonePrintsLikePython(t *testing.T) {
	tpl, err := New(`{%- for m in messages -%}[{{- m.content -}}|{{ m.missing }}|{{ none }}|{{ m.content if m.content is none else 'x' }}]{%- endfor %}`, "", "")
	if err != nil {
		t.Fatal(err)
	}
	got, err := tpl.RenderJSON([]byte(`[{"role":"assistant","content":null}]`), false, nil)
	if err != nil || got != "[None||None|None]" {
		t.Fatalf("got %q, %v", got, err)
	}
}
