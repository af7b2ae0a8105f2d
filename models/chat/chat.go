// Package chat renders Hugging Face chat templates (the Jinja `chat_template` of tokenizer_config.json)
// with github.com/ardanlabs/jinja, and locates the assistant-generated text in the rendered string so
// training can put the loss on exactly those tokens.
//
// Template variables: messages (role, content and, when set, reasoning_content), add_generation_prompt,
// bos_token, eos_token, plus the helpers templates commonly use (raise_exception, strftime_now from the
// engine; tools = none). Variables a template may test with `is defined` (enable_thinking, ...) stay
// undefined unless passed through RenderJSON's extra variables.
//
// A model without a template gets DefaultTemplate, a plain format:
//
//	{bos}{system}\n\n### User:\n{user}\n\n### Assistant:\n{assistant}{eos}\n\n ...
//
// i.e. an optional system message followed by a blank line, then each user turn as "### User:\n<text>\n\n"
// and each assistant turn as "### Assistant:\n<text><eos>\n\n"; the generation prompt is "### Assistant:\n".
package chat

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/ardanlabs/jinja"
)

// Message is one chat turn. ReasoningContent is the chain of thought of an assistant turn (R1 style);
// it is passed to the template only when non-empty.
type Message struct {
	Role             string `json:"role"`
	Content          string `json:"content"`
	ReasoningContent string `json:"reasoning_content,omitempty"`
}

// DefaultTemplate is used when a model has no chat_template (see the package documentation).
const DefaultTemplate = `{{ bos_token }}{% for message in messages %}` +
	`{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}` +
	`{% elif message['role'] == 'assistant' %}{{ '### Assistant:\n' + message['content'] + eos_token + '\n\n' }}` +
	`{% else %}{{ '### ' + message['role'] | capitalize + ':\n' + message['content'] + '\n\n' }}{% endif %}` +
	`{% endfor %}{% if add_generation_prompt %}{{ '### Assistant:\n' }}{% endif %}`

// Template is a compiled chat template. It is safe for concurrent use.
type Template struct {
	source    string
	isDefault bool
	bos, eos  string
	tpl       *jinja.Template

	reasoning bool   // the template renders reasoning_content itself
	genPrompt string // text add_generation_prompt appends after a user turn ("" if unknown)
	turnEnd   string // end-of-turn marker following an assistant turn's content ("" if unknown)
	helpers   map[string]jinja.Value
}

// Sentinels: private-use code points that do not occur in normal text; used to probe templates and to
// locate assistant text by difference.
const (
	sentA  = "\uE000\uE001"
	sentB  = "\uE002\uE003"
	sentR  = "\uE004\uE005"
	sentR2 = "\uE006\uE007"
)

// New compiles a chat template. source "" selects DefaultTemplate. bosToken/eosToken are the token
// strings ("" when the tokenizer has none).
func New(source, bosToken, eosToken string) (*Template, error) {
	t := &Template{source: source, bos: bosToken, eos: eosToken}
	if strings.TrimSpace(source) == "" {
		t.source, t.isDefault = DefaultTemplate, true
	}
	pre, table := preprocess(t.source)
	t.helpers = helperVars(table)
	tpl, err := jinja.Compile(pre)
	if err != nil {
		// fall back to the unmodified source; report its error if that fails too
		var err2 error
		if tpl, err2 = jinja.Compile(t.source); err2 != nil {
			return nil, fmt.Errorf("chat template: %w", err2)
		}
	}
	t.tpl = tpl
	t.probe()
	return t, nil
}

// Source returns the Jinja source in use (DefaultTemplate when the model has none).
func (t *Template) Source() string { return t.source }

// IsDefault reports whether the plain default template is in use.
func (t *Template) IsDefault() bool { return t.isDefault }

// SupportsReasoning reports whether the template renders an assistant message's reasoning_content.
func (t *Template) SupportsReasoning() bool { return t.reasoning }

// GenerationPrompt returns the text add_generation_prompt appends after a user turn ("" if the template
// has none or it could not be determined).
func (t *Template) GenerationPrompt() string { return t.genPrompt }

// TurnEnd returns the end-of-turn marker the template writes after an assistant message's content,
// trailing whitespace removed ("" if it could not be determined).
func (t *Template) TurnEnd() string { return t.turnEnd }

// probe learns the template's behaviour from tiny conversations.
func (t *Template) probe() {
	user := []Message{{Role: "user", Content: "U"}}
	// reasoning support
	if s, err := t.render(append(user, Message{Role: "assistant", Content: "C", ReasoningContent: sentR}), false, nil); err == nil {
		t.reasoning = strings.Contains(s, sentR)
	}
	// generation prompt
	g, err1 := t.render(user, true, nil)
	h, err2 := t.render(user, false, nil)
	if err1 == nil && err2 == nil && strings.HasPrefix(g, h) {
		t.genPrompt = g[len(h):]
	}
	// end-of-turn marker: what follows the assistant content both at the end of a conversation and
	// before a next user turn (a template may close the conversation with more, e.g. eos_token)
	after := func(msgs []Message) (string, bool) {
		s, err := t.render(msgs, false, nil)
		if err != nil {
			return "", false
		}
		i := strings.LastIndex(s, sentA)
		if i < 0 {
			return "", false
		}
		return s[i+len(sentA):], true
	}
	asst := Message{Role: "assistant", Content: sentA}
	if t1, ok := after(append(user, asst)); ok {
		end := t1
		if t2, ok := after([]Message{user[0], asst, {Role: "user", Content: "V"}}); ok {
			end = t1[:markerPrefix(t1, t2)]
		}
		t.turnEnd = strings.TrimRightFunc(end, isSpace)
	}
	if t.turnEnd == "" && t.eos != "" {
		t.turnEnd = t.eos
	}
}

// markerPrefix is the length of the common prefix of a and b, moved back (unless it is all of a) to
// just before a '<' or '[' or after a '>' or ']', so that "<|end|><|endoftext|>" vs "<|end|><|user|>"
// gives "<|end|>", not "<|end|><|".
func markerPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	if n == len(a) {
		return n
	}
	for i := n; i > 0; i-- {
		if c := a[i]; c == '<' || c == '[' || (i < len(a) && (a[i-1] == '>' || a[i-1] == ']')) || isSpace(rune(c)) {
			return i
		}
	}
	return 0
}

func isSentinel(r rune) bool { return r >= 0xE000 && r <= 0xE007 }

func isSpace(r rune) bool { return r == ' ' || r == '\n' || r == '\t' || r == '\r' }

// Render renders msgs exactly as Hugging Face apply_chat_template(tokenize=False) does. reasoning_content
// is handed to the template as is (a template that ignores it drops it); for training text use
// RenderWithSpans, which keeps the reasoning.
func (t *Template) Render(msgs []Message, addGenerationPrompt bool) (string, error) {
	return t.render(msgs, addGenerationPrompt, nil)
}

// PrepareForTraining returns msgs with reasoning_content folded into the content as
// "<think>\n{reasoning}\n</think>\n\n{content}" when the template does not render reasoning_content
// itself; otherwise msgs unchanged.
func (t *Template) PrepareForTraining(msgs []Message) []Message {
	if t.reasoning {
		return msgs
	}
	out := msgs
	copied := false
	for i, m := range msgs {
		if m.ReasoningContent == "" {
			continue
		}
		if !copied {
			out = append([]Message(nil), msgs...)
			copied = true
		}
		out[i].Content = "<think>\n" + m.ReasoningContent + "\n</think>\n\n" + m.Content
		out[i].ReasoningContent = ""
	}
	return out
}

// RenderWithSpans renders the training text of msgs (after PrepareForTraining) and returns the byte
// spans [start, end) of the assistant-generated text of every assistant message: everything the model
// produces after the generation prompt (reasoning, think tags, content) plus the end-of-turn marker.
//
// Approach (by difference, robust to templates that trim, split or re-arrange content): the full text F
// is rendered; for each assistant message k the conversation is rendered again with message k's content
// (and reasoning) replaced by private-use sentinels. The longest common prefix and suffix of the two
// renderings bound the part of F that message k produced. The start is then moved back to the end of
// the template's generation prompt when that prompt occurs between the previous span and the content
// (so e.g. Qwen3's "<think>\n\n</think>\n\n" counts as generated), and the end is extended over the
// template's end-of-turn marker (learned by probing; the eos token otherwise) when it follows.
//
// When the template ignores reasoning_content and also removes a think block from the content (as the
// DeepSeek-R1 distill templates do with content.split('</think>')[-1]), the message is rendered with its
// answer alone and "<think>\n{reasoning}\n</think>\n\n" is inserted at the start of its span, so the
// reasoning is never silently lost from training.
func (t *Template) RenderWithSpans(msgs []Message, addGenerationPrompt bool) (string, [][2]int, error) {
	if t.reasoning {
		return t.renderSpans(msgs, addGenerationPrompt)
	}
	folded := t.PrepareForTraining(msgs)
	text, spans, err := t.renderSpans(folded, addGenerationPrompt)
	if err != nil {
		return "", nil, err
	}
	// which assistant messages lost their reasoning?
	type lost struct{ msg, span int }
	var dropped []lost
	si := 0
	for k, m := range msgs {
		if m.Role != "assistant" {
			continue
		}
		if r := strings.TrimSpace(m.ReasoningContent); r != "" && si < len(spans) &&
			!strings.Contains(text[spans[si][0]:spans[si][1]], r) {
			dropped = append(dropped, lost{k, si})
		}
		si++
	}
	if len(dropped) == 0 {
		return text, spans, nil
	}
	alt := append([]Message(nil), folded...)
	for _, d := range dropped {
		alt[d.msg].Content, alt[d.msg].ReasoningContent = msgs[d.msg].Content, ""
	}
	text, spans, err = t.renderSpans(alt, addGenerationPrompt)
	if err != nil {
		return "", nil, err
	}
	for j := len(dropped) - 1; j >= 0; j-- {
		d := dropped[j]
		if d.span >= len(spans) {
			continue
		}
		block := "<think>\n" + msgs[d.msg].ReasoningContent + "\n</think>\n\n"
		at := spans[d.span][0]
		text = text[:at] + block + text[at:]
		spans[d.span][1] += len(block)
		for i := d.span + 1; i < len(spans); i++ {
			spans[i][0] += len(block)
			spans[i][1] += len(block)
		}
	}
	return text, spans, nil
}

// renderSpans renders msgs as they are and locates the assistant spans (see RenderWithSpans).
func (t *Template) renderSpans(msgs []Message, addGenerationPrompt bool) (string, [][2]int, error) {
	full, err := t.render(msgs, addGenerationPrompt, nil)
	if err != nil {
		return "", nil, err
	}
	var spans [][2]int
	prevEnd := 0
	alt := make([]Message, len(msgs))
	for k, m := range msgs {
		if m.Role != "assistant" {
			continue
		}
		// Two renderings with different sentinels: content that happens to start or end like one
		// sentinel cannot start or end like the other, so the widest of the two differences is exact.
		start, end := len(full), 0
		sents := [][2]string{{sentA, sentR}, {sentB, sentR2}}
		if !strings.ContainsFunc(m.Content, isSentinel) && !strings.ContainsFunc(m.ReasoningContent, isSentinel) {
			sents = sents[:1] // the text cannot start or end like the sentinel: one rendering is exact
		}
		for _, sent := range sents {
			copy(alt, msgs)
			alt[k].Content = sent[0]
			if m.ReasoningContent != "" {
				alt[k].ReasoningContent = sent[1]
			}
			other, err := t.render(alt, addGenerationPrompt, nil)
			if err != nil {
				return "", nil, fmt.Errorf("chat template: locating assistant message %d: %w", k, err)
			}
			p := commonPrefix(full, other)
			sfx := commonSuffix(full[p:], other[p:])
			start, end = min(start, p), max(end, len(full)-sfx)
		}
		if end < start {
			end = start
		}
		if start < prevEnd {
			start = prevEnd
			if end < start {
				end = start
			}
		}
		// move start back over generated preamble after the generation prompt
		if t.genPrompt != "" {
			if i := strings.LastIndex(full[prevEnd:start], t.genPrompt); i >= 0 {
				start = prevEnd + i + len(t.genPrompt)
			}
		}
		// extend over the end-of-turn marker
		rest := full[end:]
		switch {
		case t.turnEnd != "" && strings.HasPrefix(rest, t.turnEnd):
			end += len(t.turnEnd)
		case t.eos != "" && strings.HasPrefix(strings.TrimLeft(rest, " "), t.eos):
			end += len(rest) - len(strings.TrimLeft(rest, " ")) + len(t.eos)
		}
		spans = append(spans, [2]int{start, end})
		prevEnd = end
	}
	return full, spans, nil
}

func commonPrefix(a, b string) int {
	n := min(len(a), len(b))
	i := 0
	for i < n && a[i] == b[i] {
		i++
	}
	// do not split a UTF-8 sequence
	for i > 0 && i < len(a) && !isRuneStart(a[i]) {
		i--
	}
	return i
}

func commonSuffix(a, b string) int {
	n := min(len(a), len(b))
	i := 0
	for i < n && a[len(a)-1-i] == b[len(b)-1-i] {
		i++
	}
	for i > 0 && i < len(a) && !isRuneStart(a[len(a)-i]) {
		i--
	}
	return i
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

// RenderJSON renders raw OpenAI-style messages (a JSON array; any fields such as tool_calls, null
// content or content lists are passed through with their key order kept) and extra template variables
// (a JSON object such as {"tools":[...],"enable_thinking":false}; may be nil). This is what
// apply_chat_template(messages, add_generation_prompt=..., **extra) produces.
func (t *Template) RenderJSON(messages json.RawMessage, addGenerationPrompt bool, extra json.RawMessage) (string, error) {
	mv, err := jsonToValue(messages)
	if err != nil {
		return "", fmt.Errorf("chat: messages: %w", err)
	}
	if !mv.IsList() {
		return "", errors.New("chat: messages: not a JSON array")
	}
	vars := map[string]jinja.Value{}
	if len(bytes.TrimSpace(extra)) > 0 && string(bytes.TrimSpace(extra)) != "null" {
		ev, err := jsonToValue(extra)
		if err != nil {
			return "", fmt.Errorf("chat: template variables: %w", err)
		}
		if !ev.IsDict() {
			return "", errors.New("chat: template variables: not a JSON object")
		}
		d := ev.AsDict()
		for _, k := range d.OrderedKeys() {
			v, _ := d.Get(k)
			vars[k] = v
		}
	}
	return t.renderValues(mv, addGenerationPrompt, vars)
}

func (t *Template) render(msgs []Message, addGenerationPrompt bool, vars map[string]jinja.Value) (string, error) {
	items := make([]jinja.Value, len(msgs))
	for i, m := range msgs {
		d := jinja.NewDict()
		dd := d.AsDict()
		dd.Set("role", jinja.NewString(m.Role))
		dd.Set("content", jinja.NewString(m.Content))
		if m.ReasoningContent != "" {
			dd.Set("reasoning_content", jinja.NewString(m.ReasoningContent))
		}
		items[i] = d
	}
	return t.renderValues(jinja.NewList(items), addGenerationPrompt, vars)
}

func (t *Template) renderValues(messages jinja.Value, addGenerationPrompt bool, vars map[string]jinja.Value) (out string, err error) {
	data := map[string]jinja.Value{
		"messages":              messages,
		"add_generation_prompt": jinja.NewBool(addGenerationPrompt),
		"bos_token":             jinja.NewString(t.bos),
		"eos_token":             jinja.NewString(t.eos),
		"tools":                 jinja.None(),
		"documents":             jinja.None(),
	}
	for k, v := range t.helpers {
		data[k] = v
	}
	for k, v := range vars {
		data[k] = v
	}
	defer func() { // the engine must never take the process down on a hostile template
		if r := recover(); r != nil {
			out, err = "", fmt.Errorf("chat template: render panic: %v", r)
		}
	}()
	s, err := t.tpl.RenderValues(data)
	if err != nil {
		return "", fmt.Errorf("chat template: %w", err)
	}
	return s, nil
}

// jsonToValue decodes JSON into a jinja value keeping object key order and integer-ness.
func jsonToValue(raw []byte) (jinja.Value, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	v, err := decodeValue(dec, 0)
	if err != nil {
		return jinja.Undefined(), err
	}
	if _, err := dec.Token(); err != io.EOF {
		return jinja.Undefined(), errors.New("trailing data after JSON value")
	}
	return v, nil
}

func decodeValue(dec *json.Decoder, depth int) (jinja.Value, error) {
	if depth > 1000 {
		return jinja.Undefined(), errors.New("JSON nested too deeply")
	}
	tok, err := dec.Token()
	if err != nil {
		return jinja.Undefined(), err
	}
	switch v := tok.(type) {
	case json.Delim:
		switch v {
		case '[':
			var items []jinja.Value
			for dec.More() {
				it, err := decodeValue(dec, depth+1)
				if err != nil {
					return jinja.Undefined(), err
				}
				items = append(items, it)
			}
			if _, err := dec.Token(); err != nil {
				return jinja.Undefined(), err
			}
			if items == nil {
				items = []jinja.Value{}
			}
			return jinja.NewList(items), nil
		case '{':
			d := jinja.NewDict()
			dd := d.AsDict()
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return jinja.Undefined(), err
				}
				k, ok := kt.(string)
				if !ok {
					return jinja.Undefined(), errors.New("object key is not a string")
				}
				val, err := decodeValue(dec, depth+1)
				if err != nil {
					return jinja.Undefined(), err
				}
				dd.Set(k, val)
			}
			if _, err := dec.Token(); err != nil {
				return jinja.Undefined(), err
			}
			return d, nil
		}
		return jinja.Undefined(), fmt.Errorf("unexpected delimiter %v", v)
	default:
		return jinja.FromGoValue(v), nil
	}
}
