package openai

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
)

// Tool-call parsers, named as vLLM names them (--tool-call-parser).
const (
	// ToolParserHermes reads `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>` blocks (Hermes,
	// Qwen2.5, Qwen3).
	ToolParserHermes = "hermes"
	// ToolParserLlama3JSON reads a message that is entirely `{"name": ..., "parameters": {...}}` (several
	// separated by ";") as Llama 3.1+ writes it.
	ToolParserLlama3JSON = "llama3_json"
)

// Tool choices lorakit implements.
const (
	ToolChoiceAuto     = "auto"
	ToolChoiceNone     = "none"
	ToolChoiceRequired = "required"
)

// ToolCall is one function call: of an assistant message in the request, or parsed from model output.
type ToolCall struct {
	ID   string
	Name string
	// Arguments is a JSON object as text.
	Arguments string
}

// decodeTools validates `tools`: a list of {"type": "function", "function": {"name", "description",
// "parameters"}}. null and [] give nil; the list is returned as given.
func decodeTools(raw json.RawMessage) (json.RawMessage, *Error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var tools []struct {
		Type     string `json:"type"`
		Function *struct {
			Name       string          `json:"name"`
			Parameters json.RawMessage `json:"parameters"`
		} `json:"function"`
	}
	if err := json.Unmarshal(raw, &tools); err != nil {
		return nil, BadRequest("tools", "tools must be an array of tool objects: %v", err)
	}
	if len(tools) == 0 {
		return nil, nil
	}
	for i, t := range tools {
		p := fmt.Sprintf("tools[%d]", i)
		if t.Type != "function" {
			return nil, BadRequest(p+".type", "%s.type must be \"function\", got %q", p, t.Type)
		}
		if t.Function == nil || strings.TrimSpace(t.Function.Name) == "" {
			return nil, BadRequest(p+".function.name", "%s.function.name is required", p)
		}
		if ps := bytes.TrimSpace(t.Function.Parameters); len(ps) > 0 && string(ps) != "null" && ps[0] != '{' {
			return nil, BadRequest(p+".function.parameters", "%s.function.parameters must be a JSON Schema object", p)
		}
	}
	return raw, nil
}

// decodeToolCalls reads an assistant message's tool_calls; function.arguments is a JSON string holding
// a JSON object (OpenAI's form; an object is accepted too).
func decodeToolCalls(i int, raw json.RawMessage) ([]ToolCall, *Error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	param := fmt.Sprintf("messages[%d].tool_calls", i)
	var items []struct {
		ID       string `json:"id"`
		Type     string `json:"type"`
		Function *struct {
			Name      string          `json:"name"`
			Arguments json.RawMessage `json:"arguments"`
		} `json:"function"`
	}
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, BadRequest(param, "%s must be an array of tool calls: %v", param, err)
	}
	calls := make([]ToolCall, 0, len(items))
	for j, it := range items {
		p := fmt.Sprintf("%s[%d]", param, j)
		if it.Type != "" && it.Type != "function" {
			return nil, BadRequest(p+".type", "%s.type must be \"function\", got %q", p, it.Type)
		}
		if it.Function == nil || strings.TrimSpace(it.Function.Name) == "" {
			return nil, BadRequest(p+".function.name", "%s.function.name is required", p)
		}
		args := bytes.TrimSpace(it.Function.Arguments)
		if len(args) > 0 && args[0] == '"' {
			var s string
			if err := json.Unmarshal(args, &s); err != nil {
				return nil, BadRequest(p+".function.arguments", "%s.function.arguments: %v", p, err)
			}
			args = bytes.TrimSpace([]byte(s))
		}
		if len(args) == 0 || args[0] != '{' || !json.Valid(args) {
			return nil, BadRequest(p+".function.arguments", "%s.function.arguments must be a JSON object encoded as a string", p)
		}
		calls = append(calls, ToolCall{ID: it.ID, Name: it.Function.Name, Arguments: string(args)})
	}
	return calls, nil
}

// ToolCallSplitter separates tool calls from streamed model output, as vLLM's tool parsers do. Text
// that may still open a call is held back; a call is returned once complete. A call whose JSON is
// malformed is returned as content, unchanged. Whitespace around calls is dropped.
type ToolCallSplitter struct {
	parser string
	state  int // hermes: 0 text, 1 inside <tool_call>; llama3_json: 0 undecided, 1 JSON (held to the end), 2 text
	held   string
	called bool
	// afterCall: no text since the last call yet (leading whitespace is dropped)
	afterCall bool
}

// Hermes tags.
const (
	toolCallOpen  = "<tool_call>"
	toolCallClose = "</tool_call>"
)

// NewToolCallSplitter returns a splitter for parser (ToolParserHermes or ToolParserLlama3JSON).
func NewToolCallSplitter(parser string) *ToolCallSplitter {
	return &ToolCallSplitter{parser: parser}
}

// Add consumes a piece of output and returns the content and the calls now complete.
func (s *ToolCallSplitter) Add(text string) (content string, calls []ToolCall) {
	s.held += text
	if s.parser == ToolParserLlama3JSON {
		return s.addLlama()
	}
	for {
		switch s.state {
		case 0:
			if i := strings.Index(s.held, toolCallOpen); i >= 0 {
				content += s.textOut(s.held[:i], true)
				s.held, s.state = s.held[i+len(toolCallOpen):], 1
				continue
			}
			k := partialSuffix(s.held, toolCallOpen)
			// trailing whitespace is held too: it is dropped if a call follows
			k = len(s.held) - len(strings.TrimRightFunc(s.held[:len(s.held)-k], unicode.IsSpace))
			content += s.textOut(s.held[:len(s.held)-k], false)
			s.held = s.held[len(s.held)-k:]
			return content, calls
		case 1:
			i := strings.Index(s.held, toolCallClose)
			if i < 0 {
				return content, calls
			}
			body := s.held[:i]
			s.held, s.state = s.held[i+len(toolCallClose):], 0
			if c, ok := parseCall(body, "arguments"); ok {
				calls = append(calls, c)
				s.called, s.afterCall = true, true
			} else {
				content += toolCallOpen + body + toolCallClose
			}
		}
	}
}

// textOut is text outside calls, whitespace next to a call dropped.
func (s *ToolCallSplitter) textOut(t string, beforeCall bool) string {
	if s.afterCall {
		t = strings.TrimLeftFunc(t, unicode.IsSpace)
		s.afterCall = t == ""
	}
	if beforeCall {
		t = strings.TrimRightFunc(t, unicode.IsSpace)
	}
	return t
}

func (s *ToolCallSplitter) addLlama() (content string, calls []ToolCall) {
	switch s.state {
	case 0:
		t := strings.TrimLeftFunc(strings.TrimPrefix(strings.TrimLeftFunc(s.held, unicode.IsSpace), "<|python_tag|>"), unicode.IsSpace)
		if t == "" || strings.HasPrefix("<|python_tag|>", t) {
			return "", nil
		}
		if t[0] == '{' {
			s.state, s.held = 1, t
			return "", nil
		}
		s.state = 2
		content, s.held = s.held, ""
	case 2:
		content, s.held = s.held, ""
	}
	return content, nil
}

// Flush returns what is still held at the end of the output.
func (s *ToolCallSplitter) Flush() (content string, calls []ToolCall) {
	h := s.held
	s.held = ""
	if s.parser == ToolParserLlama3JSON {
		if s.state == 1 {
			if cs, ok := parseLlamaCalls(h); ok {
				s.called = true
				return "", cs
			}
		}
		return h, nil
	}
	if s.state == 1 { // an unclosed <tool_call> (vLLM parses it too)
		s.state = 0
		if c, ok := parseCall(h, "arguments"); ok {
			s.called = true
			return "", []ToolCall{c}
		}
		return toolCallOpen + h, nil
	}
	h = s.textOut(h, false)
	if s.called {
		h = strings.TrimRightFunc(h, unicode.IsSpace)
	}
	return h, nil
}

// parseCall reads {"name": ..., "<argsKey>": {...}} ("arguments" and "parameters" are both accepted;
// arguments given as a JSON string holding an object are taken as that object).
func parseCall(body, argsKey string) (ToolCall, bool) {
	var v struct {
		Name       *string         `json:"name"`
		Arguments  json.RawMessage `json:"arguments"`
		Parameters json.RawMessage `json:"parameters"`
	}
	b := bytes.TrimSpace([]byte(body))
	if len(b) == 0 || b[0] != '{' || json.Unmarshal(b, &v) != nil || v.Name == nil || strings.TrimSpace(*v.Name) == "" {
		return ToolCall{}, false
	}
	args := v.Arguments
	if args == nil || (argsKey == "parameters" && v.Parameters != nil) {
		args = v.Parameters
	}
	args = bytes.TrimSpace(args)
	if len(args) > 0 && args[0] == '"' {
		var s string
		if json.Unmarshal(args, &s) != nil {
			return ToolCall{}, false
		}
		args = bytes.TrimSpace([]byte(s))
	}
	switch {
	case len(args) == 0 || string(args) == "null":
		args = []byte("{}")
	case args[0] != '{' || !json.Valid(args):
		return ToolCall{}, false
	}
	return ToolCall{Name: *v.Name, Arguments: string(args)}, true
}

// parseLlamaCalls reads one or more `{"name": ..., "parameters": {...}}` objects separated by ";".
func parseLlamaCalls(text string) ([]ToolCall, bool) {
	var calls []ToolCall
	rest := strings.TrimSpace(text)
	for rest != "" {
		dec := json.NewDecoder(strings.NewReader(rest))
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, false
		}
		c, ok := parseCall(string(raw), "parameters")
		if !ok {
			return nil, false
		}
		calls = append(calls, c)
		rest = strings.TrimSpace(rest[dec.InputOffset():])
		if rest != "" {
			if rest[0] != ';' {
				return nil, false
			}
			rest = strings.TrimSpace(rest[1:])
		}
	}
	return calls, len(calls) > 0
}

// SplitToolCalls parses a whole output (non-streaming responses). content is the text outside the calls
// (nil when calls were made and no other text was).
func SplitToolCalls(parser, text string) (content *string, calls []ToolCall) {
	s := NewToolCallSplitter(parser)
	c1, k1 := s.Add(text)
	c2, k2 := s.Flush()
	c := c1 + c2
	calls = append(k1, k2...)
	if len(calls) > 0 && c == "" {
		return nil, calls
	}
	return &c, calls
}

// ChatToolCall is a tool call of a response message.
type ChatToolCall struct {
	ID       string       `json:"id"`
	Type     string       `json:"type"` // "function"
	Function FunctionCall `json:"function"`
}

// FunctionCall is function of a tool call.
type FunctionCall struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments"`
}

// ChatToolCallDelta is a streamed tool call: index identifies the call; id, type and name come in its
// first chunk, arguments may follow in pieces (lorakit sends them whole).
type ChatToolCallDelta struct {
	Index    int          `json:"index"`
	ID       string       `json:"id,omitempty"`
	Type     string       `json:"type,omitempty"`
	Function FunctionCall `json:"function"`
}
