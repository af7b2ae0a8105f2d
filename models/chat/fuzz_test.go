package chat

import (
	"strings"
	"testing"
)

// FuzzRenderWithSpans: any message text renders without panic, spans are ordered, inside the text, and
// each assistant span contains the (template-trimmed) content.
func FuzzRenderWithSpans(f *testing.F) {
	f.Add("hi", "hello", "think")
	f.Add("", "", "")
	f.Add("\x1c {{ x }} {% if %}", " a\u2003", "</think>")
	src := `{{ bos_token }}{% for m in messages %}{% if m.role == 'assistant' %}{{ 'A: ' + m.content | trim + eos_token + '\n' }}` +
		`{% else %}{{ 'U: ' + m.content + '\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'A: ' }}{% endif %}`
	tpls := []*Template{}
	for _, s := range []string{src, ""} {
		tpl, err := New(s, "<s>", "</s>")
		if err != nil {
			f.Fatal(err)
		}
		tpls = append(tpls, tpl)
	}
	f.Fuzz(func(t *testing.T, user, answer, reasoning string) {
		msgs := []Message{{Role: "user", Content: user}, {Role: "assistant", Content: answer, ReasoningContent: reasoning}}
		for _, tpl := range tpls {
			text, spans, err := tpl.RenderWithSpans(msgs, false)
			if err != nil {
				return
			}
			prev := 0
			for _, sp := range spans {
				if sp[0] < prev || sp[1] < sp[0] || sp[1] > len(text) {
					t.Fatalf("bad span %v in %q", sp, text)
				}
				prev = sp[1]
			}
			if len(spans) != 1 {
				t.Fatalf("%d spans", len(spans))
			}
			if !strings.HasSuffix(text[spans[0][0]:spans[0][1]], "</s>") {
				t.Fatalf("span %q lacks eos in %q", text[spans[0][0]:spans[0][1]], text)
			}
		}
	})
}
