package data

// Function-calling data in the OpenAI fine-tuning / TRL shape:
//
//	{"tools": [{"type": "function", "function": {"name": "...", "description": "...", "parameters": {...}}}],
//	 "messages": [
//	   {"role": "user", "content": "..."},
//	   {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
//	        "function": {"name": "...", "arguments": "{\"city\": \"Paris\"}"}}]},
//	   {"role": "tool", "tool_call_id": "c1", "name": "...", "content": "..."},
//	   {"role": "assistant", "content": "...", "weight": 1}]}
//
// Such an example is rendered with the model's chat template through chat.Template.RenderJSON, the way
// transformers' apply_chat_template(messages, tools=tools) renders it, and the loss-bearing spans are
// located by difference as chat.Template.RenderWithSpans does for plain conversations.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/lorakit/lorakit/models/chat"
)

// ToolCall is one tool call of an assistant message.
type ToolCall struct {
	ID   string // "" when absent
	Name string // function.name
	// Arguments is function.arguments as JSON object text: the decoded string when the data gave a JSON
	// string (OpenAI's form), the object as written when it gave an object.
	Arguments json.RawMessage
	// ArgumentsString is the string form: the data's string, or Arguments when an object was given.
	ArgumentsString string
}

// MessageExtra holds the per-message fields chat.Message has no room for.
type MessageExtra struct {
	ToolCalls   []ToolCall // assistant: its tool calls
	NullContent bool       // assistant with tool calls whose "content" is null or absent
	ToolCallID  string     // tool: tool_call_id
	Name        string     // tool: name
	NoLoss      bool       // assistant with "weight": 0 (OpenAI fine-tuning): context, not a target
}

// ErrTemplateNoTools is wrapped by errors about a chat template that cannot render the tools list, tool
// calls or tool results of an example (it would silently drop them).
var ErrTemplateNoTools = chat.ErrTemplateNoTools

// HasToolCalls reports whether an assistant message makes tool calls.
func (ex *Example) HasToolCalls() bool {
	for _, e := range ex.Extra {
		if len(e.ToolCalls) > 0 {
			return true
		}
	}
	return false
}

// UsesTools reports whether ex has a tools list, tool calls or tool results (and so is rendered with
// them through the template).
func (ex *Example) UsesTools() bool {
	if ex.Tools != nil {
		return true
	}
	for _, m := range ex.Messages {
		if m.Role == "tool" {
			return true
		}
	}
	return ex.HasToolCalls()
}

// extraAt returns ex.Extra[i] or the zero value.
func (ex *Example) extraAt(i int) MessageExtra {
	if i < len(ex.Extra) {
		return ex.Extra[i]
	}
	return MessageExtra{}
}

// jsonValue unwraps a field that may hold JSON either directly or as a JSON string (datasets often
// store tools and arguments as strings). isString reports the latter.
func jsonValue(raw json.RawMessage) (v json.RawMessage, isString bool, s string, err error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, false, "", err
		}
		t := bytes.TrimSpace([]byte(s))
		if !json.Valid(t) {
			return nil, true, s, errors.New("string is not valid JSON")
		}
		return t, true, s, nil
	}
	return raw, false, "", nil
}

func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || string(t) == "null"
}

// parseTools validates the top-level "tools" field. null and [] give nil.
func parseTools(raw json.RawMessage) (json.RawMessage, error) {
	if isNull(raw) {
		return nil, nil
	}
	v, _, _, err := jsonValue(raw)
	if err != nil {
		return nil, fmt.Errorf(`field "tools": %v`, err)
	}
	var items []map[string]json.RawMessage
	if err := json.Unmarshal(v, &items); err != nil {
		return nil, errors.New(`field "tools": not a list of objects`)
	}
	if len(items) == 0 {
		return nil, nil
	}
	for i, it := range items {
		if it == nil {
			return nil, fmt.Errorf("tools[%d]: not an object", i)
		}
		if typ, ok, err := str(it, "type"); err != nil || (ok && typ != "function") {
			return nil, fmt.Errorf(`tools[%d]: field "type": want "function"`, i)
		}
		fn, err := object(it, "function")
		if err != nil {
			return nil, fmt.Errorf("tools[%d]: %v", i, err)
		}
		if name, err := required(fn, "name"); err != nil || isBlank(name) {
			return nil, fmt.Errorf(`tools[%d].function: missing field "name"`, i)
		}
	}
	return v, nil
}

// object reads a field that must be a JSON object.
func object(obj map[string]json.RawMessage, key string) (map[string]json.RawMessage, error) {
	raw, ok := obj[key]
	if !ok || isNull(raw) {
		return nil, fmt.Errorf("missing field %q", key)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return nil, fmt.Errorf("field %q: not an object", key)
	}
	return m, nil
}

// parseToolCalls reads an assistant message's "tool_calls" (absent, null or [] give nil). Errors name
// the field relative to the message ("tool_calls[0].function: missing field \"name\"").
func parseToolCalls(raw json.RawMessage, present bool) ([]ToolCall, error) {
	if !present || isNull(raw) {
		return nil, nil
	}
	var items []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, errors.New(`field "tool_calls": not a list of objects`)
	}
	calls := make([]ToolCall, 0, len(items))
	for j, it := range items {
		if it == nil {
			return nil, fmt.Errorf("tool_calls[%d]: not an object", j)
		}
		var c ToolCall
		var err error
		if c.ID, _, err = str(it, "id"); err != nil {
			return nil, fmt.Errorf("tool_calls[%d]: %v", j, err)
		}
		if typ, ok, err := str(it, "type"); err != nil || (ok && typ != "function") {
			return nil, fmt.Errorf(`tool_calls[%d]: field "type": want "function"`, j)
		}
		fn, err := object(it, "function")
		if err != nil {
			return nil, fmt.Errorf("tool_calls[%d]: %v", j, err)
		}
		if c.Name, err = required(fn, "name"); err != nil {
			return nil, fmt.Errorf("tool_calls[%d].function: %v", j, err)
		}
		if isBlank(c.Name) {
			return nil, fmt.Errorf(`tool_calls[%d].function: field "name": empty`, j)
		}
		araw, ok := fn["arguments"]
		if !ok || isNull(araw) {
			return nil, fmt.Errorf(`tool_calls[%d].function: missing field "arguments"`, j)
		}
		v, isString, s, err := jsonValue(araw)
		if err != nil {
			return nil, fmt.Errorf(`tool_calls[%d].function: field "arguments": %v`, j, err)
		}
		if len(v) == 0 || v[0] != '{' {
			return nil, fmt.Errorf(`tool_calls[%d].function: field "arguments": not a JSON object`, j)
		}
		c.Arguments = v
		c.ArgumentsString = string(v)
		if isString {
			c.ArgumentsString = s
		}
		calls = append(calls, c)
	}
	return calls, nil
}

// parseWeight reads an optional "weight": 0 or 1. noLoss is set for 0.
func parseWeight(it map[string]json.RawMessage) (noLoss, present bool, err error) {
	raw, ok := it["weight"]
	if !ok || isNull(raw) {
		return false, false, nil
	}
	var w float64
	if err := json.Unmarshal(raw, &w); err != nil || (w != 0 && w != 1) {
		return false, true, errors.New(`field "weight": want 0 or 1`)
	}
	return w == 0, true, nil
}

// checkToolOrder is checkOrder for conversations with tool calls or tool results: optional system, then
// a user turn; a user turn is answered by an assistant; an assistant turn that makes tool calls is
// followed by their "tool" results (unless it ends the conversation); results are followed by more
// results or an assistant turn; the conversation ends with an assistant turn.
func checkToolOrder(msgs []chat.Message, extra []MessageExtra) error {
	start := 0
	if msgs[0].Role == "system" {
		start = 1
	}
	if start == len(msgs) {
		return errors.New("wrong role order: no user/assistant turns after the system message")
	}
	caller := -1 // the assistant message whose tool calls the following tool messages answer
	results := 0
	prev := ""
	for i := start; i < len(msgs); i++ {
		role := msgs[i].Role
		var e MessageExtra
		if i < len(extra) {
			e = extra[i]
		}
		want := "user"
		switch prev {
		case "user":
			want = "assistant"
		case "assistant":
			if caller >= 0 {
				want = "tool"
			}
		case "tool":
			want = "assistant"
		}
		switch {
		case role == "tool" && caller < 0:
			return fmt.Errorf("wrong role order: messages[%d] is a \"tool\" result without a preceding assistant tool call", i)
		case role == "tool":
			calls := extra[caller].ToolCalls
			if results >= len(calls) {
				return fmt.Errorf("wrong role order: messages[%d] is a \"tool\" result, but messages[%d] made only %d tool call(s)", i, caller, len(calls))
			}
			if e.ToolCallID != "" && !hasCallID(calls, e.ToolCallID) && hasAnyCallID(calls) {
				return fmt.Errorf(`messages[%d]: field "tool_call_id": %q matches no tool call of messages[%d]`, i, e.ToolCallID, caller)
			}
			results++
		case want == "tool":
			return fmt.Errorf("wrong role order: messages[%d] is %q, want \"tool\" (the results of the tool calls of messages[%d])", i, role, caller)
		case role != want && !(want == "assistant" && prev == "tool" && role == "assistant"):
			return fmt.Errorf("wrong role order: messages[%d] is %q, want %q (optional system, then user/assistant alternating, tool results after an assistant's tool_calls)", i, role, want)
		}
		if role == "assistant" {
			caller, results = -1, 0
			if len(e.ToolCalls) > 0 {
				caller = i
			} else if isBlank(msgs[i].Content) {
				return fmt.Errorf("empty response (messages[%d])", i)
			}
		}
		prev = role
	}
	if last := msgs[len(msgs)-1]; last.Role != "assistant" {
		return fmt.Errorf("wrong role order: last message (messages[%d]) is %q, want \"assistant\"", len(msgs)-1, last.Role)
	}
	return nil
}

func hasCallID(calls []ToolCall, id string) bool {
	for _, c := range calls {
		if c.ID == id {
			return true
		}
	}
	return false
}

func hasAnyCallID(calls []ToolCall) bool {
	for _, c := range calls {
		if c.ID != "" {
			return true
		}
	}
	return false
}

// checkWeights rejects an example whose every assistant turn has weight 0.
func checkWeights(msgs []chat.Message, extra []MessageExtra) error {
	if extra == nil {
		return nil
	}
	for i, m := range msgs {
		if m.Role == "assistant" && !extra[i].NoLoss {
			return nil
		}
	}
	return errors.New(`field "weight": every assistant message has weight 0 (nothing to train on)`)
}

// turnSpan is the loss-bearing byte span of the assistant message msgs[msg].
type turnSpan struct {
	msg  int
	span [2]int
}

// renderExample renders ex in training form and returns the text and the spans of the assistant turns
// that carry loss (weight 0 turns left out), in message order.
func renderExample(tpl *chat.Template, ex *Example) (string, []turnSpan, error) {
	if ex.Format == FormatText { // no template: the whole document is trained on
		return ex.Text, []turnSpan{{0, [2]int{0, len(ex.Text)}}}, nil
	}
	if ex.UsesTools() {
		r, err := newToolRender(tpl, ex)
		if err != nil {
			return "", nil, err
		}
		return r.render()
	}
	text, spans, err := tpl.RenderWithSpans(ex.Messages, false)
	if err != nil {
		return "", nil, err
	}
	var out []turnSpan
	si := 0
	for k, m := range ex.Messages {
		if m.Role != "assistant" || si >= len(spans) {
			continue
		}
		if !ex.extraAt(k).NoLoss {
			out = append(out, turnSpan{k, spans[si]})
		}
		si++
	}
	return text, out, nil
}

// RenderExample renders ex for training (with its tools, tool calls and tool results when it has them)
// and returns the text and the byte spans [start, end) of the assistant text that is trained on: every
// assistant turn's reasoning, content, rendered tool calls and end-of-turn marker, except turns with
// "weight": 0. A text-shape example is its text, one span over all of it.
func RenderExample(tpl *chat.Template, ex *Example) (string, [][2]int, error) {
	text, ts, err := renderExample(tpl, ex)
	if err != nil {
		return "", nil, err
	}
	spans := make([][2]int, len(ts))
	for i, t := range ts {
		spans[i] = t.span
	}
	return text, spans, nil
}

// LastTurn splits ex's training text at its last assistant message: the prompt before it (ending with
// the generation prompt) and what the model should generate (end-of-turn marker removed). ok is false
// when the last message carries no loss (weight 0).
func LastTurn(tpl *chat.Template, ex *Example) (prompt, reference string, ok bool, err error) {
	text, ts, err := renderExample(tpl, ex)
	if err != nil {
		return "", "", false, err
	}
	if len(ts) == 0 || ts[len(ts)-1].msg != len(ex.Messages)-1 {
		return "", "", false, nil
	}
	sp := ts[len(ts)-1].span
	ref := text[sp[0]:sp[1]]
	if te := tpl.TurnEnd(); te != "" {
		ref = strings.TrimSuffix(ref, te)
	}
	return text[:sp[0]], ref, true, nil
}

// Sentinels (private-use code points) that replace generated text to locate it by difference.
var toolSentinels = [2]struct{ content, name, reasoning, result string }{
	{"\uE010\uE011", "\uE012\uE013", "\uE014\uE015", "\uE016\uE017"},
	{"\uE018\uE019", "\uE01A\uE01B", "\uE01C\uE01D", "\uE01E\uE01F"},
}

func hasSentinel(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r >= 0xE010 && r <= 0xE01F })
}

// toolRender renders one tool-calling example.
type toolRender struct {
	tpl   *chat.Template
	ex    *Example
	msgs  []chat.Message // reasoning folded into content when the template ignores reasoning_content
	tools json.RawMessage
	// argString passes function.arguments as a JSON string instead of an object, nullString a null
	// content as "" instead of None (see render).
	argString, nullString bool
}

func newToolRender(tpl *chat.Template, ex *Example) (*toolRender, error) {
	r := &toolRender{tpl: tpl, ex: ex, msgs: ex.Messages, tools: ex.Tools}
	if !tpl.SupportsReasoning() {
		r.msgs = tpl.PrepareForTraining(ex.Messages)
	}
	return r, nil
}

// wire builds the template's messages from r.msgs.
func (r *toolRender) wire() []chat.WireMessage {
	out := make([]chat.WireMessage, len(r.msgs))
	for i, m := range r.msgs {
		e := r.ex.extraAt(i)
		w := chat.WireMessage{Role: m.Role, ReasoningContent: m.ReasoningContent}
		content := m.Content
		if !e.NullContent || r.nullString || m.ReasoningContent != r.ex.Messages[i].ReasoningContent {
			w.Content = &content // (folded reasoning makes a null content a string)
		}
		for _, c := range e.ToolCalls {
			args := c.Arguments
			if r.argString {
				args, _ = json.Marshal(c.ArgumentsString)
			}
			w.ToolCalls = append(w.ToolCalls, chat.WireCall{ID: c.ID, Type: "function", Function: chat.WireFunction{Name: c.Name, Arguments: args}})
		}
		if m.Role == "tool" {
			w.ToolCallID, w.Name = e.ToolCallID, e.Name
		}
		out[i] = w
	}
	return out
}

func (r *toolRender) renderWire(msgs []chat.WireMessage, tools json.RawMessage) (string, error) {
	return r.tpl.RenderWire(msgs, tools, false, nil)
}

// render renders the example and locates the loss-bearing assistant spans.
//
// Arguments: transformers' apply_chat_template documents function.arguments as a dict, and the
// templates of Qwen2.5 and Llama-3.1/3.2 render it with `| tojson` (Qwen3 takes either), so it is
// passed as a parsed object (a JSON string would come out double-encoded). Templates that
// concatenate it as a string (DeepSeek-R1/V3: `'\n' + tool['function']['arguments']`) fail on an
// object; for those the string form is passed instead. Likewise a null content is passed as None (what
// DeepSeek's template tests for), and as "" to a template that fails on None (typically one with no
// tool support, which then gets the clear "cannot render tool calls" error below).
//
// Spans: for each assistant message the conversation is rendered again with its content, reasoning
// and tool-call names replaced by sentinels; the first and last differences bound what the message
// produced. The start moves back to the end of the template's generation prompt; the end extends to
// the template's end-of-turn marker, searched no further than where the conversation cut after this
// message stops matching the full rendering (so a tool call's closing text is included and the tool
// result that follows never is).
func (r *toolRender) render() (string, []turnSpan, error) {
	msgs := r.wire()
	full, err := r.renderWire(msgs, r.tools)
	if err != nil && r.ex.HasToolCalls() {
		for _, v := range [][2]bool{{true, false}, {false, true}, {true, true}} {
			r.argString, r.nullString = v[0], v[1]
			m2 := r.wire()
			if f2, err2 := r.renderWire(m2, r.tools); err2 == nil {
				full, msgs, err = f2, m2, nil
				break
			}
		}
	}
	if err != nil {
		return "", nil, err
	}
	if err := r.checkToolsRendered(full, msgs); err != nil {
		return "", nil, err
	}
	var out []turnSpan
	prevEnd := 0
	for k := range msgs {
		if msgs[k].Role != "assistant" {
			continue
		}
		start, end, err := r.locate(full, msgs, k)
		if err != nil {
			return "", nil, err
		}
		start = max(start, prevEnd)
		end = max(end, start)
		if gp := r.tpl.GenerationPrompt(); gp != "" {
			if i := strings.LastIndex(full[prevEnd:start], gp); i >= 0 {
				start = prevEnd + i + len(gp)
			}
		}
		bound := len(full)
		if k+1 < len(msgs) {
			cut, err := r.renderWire(msgs[:k+1], r.tools)
			if err != nil {
				return "", nil, fmt.Errorf("chat template: rendering messages[:%d]: %w", k+1, err)
			}
			if b := commonPrefixLen(full, cut); b >= end {
				bound = b
			}
		}
		tail := full[end:bound]
		if te := r.tpl.TurnEnd(); te != "" && strings.Contains(tail, te) {
			end += strings.Index(tail, te) + len(te)
		} else if k+1 < len(msgs) {
			end += len(strings.TrimRight(tail, " \t\r\n"))
		}
		if rc := strings.TrimSpace(r.ex.Messages[k].ReasoningContent); rc != "" && !strings.Contains(full[start:end], rc) {
			return "", nil, fmt.Errorf("messages[%d]: the chat template drops reasoning_content in a tool-calling conversation", k)
		}
		if !r.ex.extraAt(k).NoLoss {
			out = append(out, turnSpan{k, [2]int{start, end}})
		}
		prevEnd = end
	}
	return full, out, nil
}

// locate returns the bounds of the text that differs when assistant message k's generated fields are
// replaced by sentinels; it also checks that the template renders the message's tool calls.
func (r *toolRender) locate(full string, msgs []chat.WireMessage, k int) (int, int, error) {
	m := msgs[k]
	sets := toolSentinels[:1]
	if (m.Content != nil && hasSentinel(*m.Content)) || hasSentinel(m.ReasoningContent) {
		sets = toolSentinels[:]
	}
	for _, c := range m.ToolCalls {
		if hasSentinel(c.Function.Name) {
			sets = toolSentinels[:]
		}
	}
	start, end := len(full), 0
	alt := make([]chat.WireMessage, len(msgs))
	for _, s := range sets {
		copy(alt, msgs)
		a := &alt[k]
		if a.Content != nil && *a.Content != "" {
			a.Content = &s.content
		}
		if a.ReasoningContent != "" {
			a.ReasoningContent = s.reasoning
		}
		if len(a.ToolCalls) > 0 {
			a.ToolCalls = append([]chat.WireCall(nil), a.ToolCalls...)
			for j := range a.ToolCalls {
				a.ToolCalls[j].Function.Name = s.name
			}
		}
		other, err := r.renderWire(alt, r.tools)
		if err != nil {
			return 0, 0, fmt.Errorf("chat template: locating assistant messages[%d]: %w", k, err)
		}
		if n := len(m.ToolCalls); n > 0 && strings.Count(other, s.name) < n {
			return 0, 0, fmt.Errorf("messages[%d].tool_calls: %w (it has no tool_calls handling)", k, ErrTemplateNoTools)
		}
		p := commonPrefixLen(full, other)
		sfx := commonSuffixLen(full[p:], other[p:])
		start, end = min(start, p), max(end, len(full)-sfx)
	}
	return start, end, nil
}

// checkToolsRendered fails when the template ignores the tools list or drops tool results.
func (r *toolRender) checkToolsRendered(full string, msgs []chat.WireMessage) error {
	if r.tools != nil {
		without, err := r.renderWire(msgs, nil)
		if err != nil {
			return fmt.Errorf("chat template: rendering without tools: %w", err)
		}
		if without == full {
			return fmt.Errorf(`field "tools": %w (it ignores the tools list)`, ErrTemplateNoTools)
		}
	}
	n, first := 0, -1
	alt := append([]chat.WireMessage(nil), msgs...)
	s := toolSentinels[0].result
	for i := range alt {
		if alt[i].Role == "tool" {
			alt[i].Content = &s
			n++
			if first < 0 {
				first = i
			}
		}
	}
	if n == 0 {
		return nil
	}
	out, err := r.renderWire(alt, r.tools)
	if err != nil {
		return fmt.Errorf("chat template: %w", err)
	}
	if strings.Count(out, s) < n {
		return fmt.Errorf("messages[%d]: %w (it drops \"tool\" messages)", first, ErrTemplateNoTools)
	}
	return nil
}

func commonPrefixLen(a, b string) int {
	n := min(len(a), len(b))
	i := 0
	for i < n && a[i] == b[i] {
		i++
	}
	for i > 0 && i < len(a) && a[i]&0xC0 == 0x80 {
		i--
	}
	return i
}

func commonSuffixLen(a, b string) int {
	n := min(len(a), len(b))
	i := 0
	for i < n && a[len(a)-1-i] == b[len(b)-1-i] {
		i++
	}
	for i > 0 && i < len(a) && a[len(a)-i]&0xC0 == 0x80 {
		i--
	}
	return i
}
