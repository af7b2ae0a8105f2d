package ggufconv

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"

	"github.com/lorakit/lorakit/models/chat"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/tokenizer"
)

// ModelfileHeader starts every Modelfile lorakit writes (so a rerun may replace it, and nothing else).
const ModelfileHeader = "# Modelfile written by lorakit export gguf"

// ModelfileOptions name what an Ollama Modelfile imports.
type ModelfileOptions struct {
	From    string // the base: a GGUF file, a model folder or an Ollama model name
	Adapter string // a LoRA adapter GGUF file, or ""
	Model   string // the Hugging Face folder whose chat template and end tokens the Modelfile carries
}

// Modelfile returns the text of an Ollama Modelfile for o, with paths relative to dir (where it will be
// written): FROM, ADAPTER, TEMPLATE (the chat template translated to Ollama's Go template when the translation
// renders the same text on probe conversations) and PARAMETER stop for every end-of-generation token. Notes say
// what could not be translated.
func Modelfile(o ModelfileOptions, dir string) (string, []string, error) {
	var notes []string
	var b strings.Builder
	b.WriteString(ModelfileHeader + " from " + filepath.Base(filepath.Clean(o.Model)) + "\n")
	fmt.Fprintf(&b, "FROM %s\n", modelfilePath(o.From, dir))
	if o.Adapter != "" {
		fmt.Fprintf(&b, "ADAPTER %s\n", modelfilePath(o.Adapter, dir))
	}
	tok, err := tokenizer.Load(o.Model)
	if err != nil {
		return "", nil, fmt.Errorf("ggufconv: modelfile: %w", err)
	}
	c := tok.Config()
	if c.ChatTemplate != "" {
		tpl, err := chat.New(c.ChatTemplate, c.BOSToken, c.EOSToken)
		if err != nil {
			return "", nil, fmt.Errorf("ggufconv: %s: chat_template: %w", o.Model, err)
		}
		bos := ""
		if id, ok := tok.BOS(); ok && len(tok.Encode("a", true)) > len(tok.Encode("a", false)) {
			bos = tok.Token(id) // the runtime adds it; the template must not write it again
		}
		text, err := OllamaTemplate(tpl, bos)
		switch {
		case err != nil:
			notes = append(notes, "no TEMPLATE: the chat template could not be translated for Ollama ("+err.Error()+"); add one by hand")
		case strings.Contains(text, `"""`):
			notes = append(notes, `no TEMPLATE: the translated template contains """`)
		default:
			fmt.Fprintf(&b, "TEMPLATE \"\"\"%s\"\"\"\n", text)
		}
	} else {
		notes = append(notes, "no TEMPLATE: the model has no chat template")
	}
	for _, s := range stopTokens(o.Model, tok) {
		fmt.Fprintf(&b, "PARAMETER stop %s\n", strconv.Quote(s))
	}
	return b.String(), notes, nil
}

func modelfilePath(p, dir string) string {
	if abs, err := filepath.Abs(p); err == nil {
		if ad, err := filepath.Abs(dir); err == nil {
			if rel, err := filepath.Rel(ad, abs); err == nil && !strings.HasPrefix(rel, "..") {
				return "./" + filepath.ToSlash(rel)
			}
		}
		return abs
	}
	return p
}

// stopTokens lists the text of every end-of-generation token: generation_config.json's and config.json's
// eos_token_id and the tokenizer's eos_token.
func stopTokens(dir string, tok *tokenizer.Tokenizer) []string {
	var ids []int
	for _, f := range []string{"generation_config.json", "config.json"} {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			continue
		}
		var v struct {
			EOS json.RawMessage `json:"eos_token_id"`
		}
		if json.Unmarshal(data, &v) == nil {
			if l, err := llama.IntOrList(v.EOS); err == nil {
				ids = append(ids, l...)
			}
		}
	}
	if id, ok := tok.EOS(); ok {
		ids = append(ids, id)
	}
	var out []string
	seen := map[string]bool{}
	for _, id := range ids {
		if id < 0 || id >= tok.VocabSize() {
			continue
		}
		if s := tok.Token(id); s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// Sentinels stand for message contents while the template's fixed text is worked out.
const (
	sentU1, sentA, sentU2, sentS = "\uE101", "\uE102", "\uE103", "\uE104"
)

// OllamaTemplate translates a chat template into an Ollama TEMPLATE (Go text/template over .Messages): it
// renders probe conversations, cuts the fixed text around each role's content, the text before the first
// message and the generation prompt, and checks that the translation renders every probe exactly as the
// original (minus a leading bos, which the runtime adds). Templates whose text depends on more than the role
// (per-message conditions beyond it, tool calls, dates) fail the check and are not translated.
func OllamaTemplate(t *chat.Template, bos string) (string, error) {
	render := func(gen bool, msgs ...chat.Message) (string, error) { return t.Render(msgs, gen) }
	u1 := chat.Message{Role: "user", Content: sentU1}
	a := chat.Message{Role: "assistant", Content: sentA}
	u2 := chat.Message{Role: "user", Content: sentU2}
	s := chat.Message{Role: "system", Content: sentS}
	rU, err := render(false, u1)
	if err != nil {
		return "", err
	}
	rUgen, err := render(true, u1)
	if err != nil {
		return "", err
	}
	rUA, err := render(false, u1, a)
	if err != nil {
		return "", err
	}
	rUAU, err := render(false, u1, a, u2)
	if err != nil {
		return "", err
	}
	gen, ok := strings.CutPrefix(rUgen, rU)
	if !ok {
		return "", errors.New("the generation prompt is not appended at the end")
	}
	segU, ok := strings.CutPrefix(rUAU, rUA)
	if !ok {
		return "", errors.New("a later user turn changes earlier text")
	}
	preU, postU, ok := strings.Cut(segU, sentU2)
	if !ok {
		return "", errors.New("the user content is not rendered as is")
	}
	head, ok := strings.CutSuffix(rU, preU+sentU1+postU)
	if !ok {
		return "", errors.New("the first user turn is rendered differently from a later one")
	}
	segA, ok := strings.CutPrefix(rUA, rU)
	if !ok {
		return "", errors.New("an assistant turn changes earlier text")
	}
	preA, postA, ok := strings.Cut(segA, sentA)
	if !ok {
		return "", errors.New("the assistant content is not rendered as is")
	}
	preS, postS, hasSystem := "", "", false
	if rSU, err := render(false, s, u1); err == nil {
		if mid, ok := strings.CutPrefix(rSU, head); ok {
			if mid, ok = strings.CutSuffix(mid, preU+sentU1+postU); ok {
				preS, postS, hasSystem = strings.Cut(mid, sentS)
			}
		}
	}
	head = strings.TrimPrefix(head, bos)
	lit := func(s string) string {
		if !strings.Contains(s, "{{") && !strings.Contains(s, "}}") {
			return s
		}
		return "{{ " + strconv.Quote(s) + " }}"
	}
	last := `(eq (len (slice $.Messages $i)) 1)`
	var b strings.Builder
	b.WriteString(lit(head))
	b.WriteString(`{{- range $i, $m := .Messages }}`)
	if hasSystem {
		b.WriteString(`{{ if eq .Role "system" }}` + lit(preS) + `{{ .Content }}` + lit(postS) + `{{ else if eq .Role "user" }}`)
	} else {
		b.WriteString(`{{ if eq .Role "user" }}`)
	}
	b.WriteString(lit(preU) + `{{ .Content }}` + lit(postU))
	b.WriteString(`{{ else if eq .Role "assistant" }}` + lit(preA) + `{{ .Content }}{{ if not ` + last + ` }}` + lit(postA) + `{{ end }}`)
	b.WriteString(`{{ end }}{{ if and ` + last + ` (ne .Role "assistant") }}` + lit(gen) + `{{ end }}{{ end }}`)
	text := b.String()
	probes := [][]chat.Message{{u1}, {u1, a, u2}, {{Role: "user", Content: "Hi {{ there }}"}}}
	if hasSystem {
		probes = append(probes, []chat.Message{s, u1}, []chat.Message{s, u1, a, u2})
	}
	for _, msgs := range probes {
		want, err := render(true, msgs...)
		if err != nil {
			return "", err
		}
		got, err := renderOllama(text, msgs)
		if err != nil {
			return "", err
		}
		if bos != "" && got == want && strings.HasPrefix(want, bos) {
			return "", errors.New("the template writes the BOS token inside each turn, and the runtime adds one more at the start")
		}
		if got != strings.TrimPrefix(want, bos) {
			return "", fmt.Errorf("the translation renders %q where the template renders %q", got, want)
		}
	}
	return text, nil
}

// renderOllama renders an Ollama template the way Ollama does for a chat (the messages as .Messages).
func renderOllama(text string, msgs []chat.Message) (string, error) {
	tpl, err := template.New("ollama").Parse(text)
	if err != nil {
		return "", err
	}
	type message struct{ Role, Content string }
	var data struct{ Messages []message }
	for _, m := range msgs {
		data.Messages = append(data.Messages, message{m.Role, m.Content})
	}
	var b strings.Builder
	if err := tpl.Execute(&b, data); err != nil {
		return "", err
	}
	return b.String(), nil
}

func baseName(dir string) string { return filepath.Base(filepath.Clean(dir)) }
