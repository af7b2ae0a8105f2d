package chat

// Tool-calling conversations in the OpenAI shape, shared by training data (train/data) and serving
// (serve): the wire messages handed to a template, how a template's tool-call output format is
// recognised, and a rendering that refuses templates which would silently drop tools.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// ErrTemplateNoTools is wrapped by errors about a chat template that cannot render the tools list, tool
// calls or tool results of a conversation (it would silently drop them).
var ErrTemplateNoTools = errors.New("the chat template cannot render tool-calling conversations")

// WireFunction is function of a tool call. Arguments is a JSON object, or a JSON string holding one
// (for templates that concatenate it; see RenderConversation).
type WireFunction struct {
	Name      string          `json:"name"`
	Arguments json.RawMessage `json:"arguments"`
}

// WireCall is one entry of an assistant message's tool_calls.
type WireCall struct {
	ID       string       `json:"id,omitempty"`
	Type     string       `json:"type"`
	Function WireFunction `json:"function"`
}

// WireMessage is a message as transformers' apply_chat_template receives it (field order as OpenAI
// writes them). Content nil is None (an assistant turn that only calls tools).
type WireMessage struct {
	Role             string     `json:"role"`
	Content          *string    `json:"content"`
	ReasoningContent string     `json:"reasoning_content,omitempty"`
	ToolCalls        []WireCall `json:"tool_calls,omitempty"`
	ToolCallID       string     `json:"tool_call_id,omitempty"`
	Name             string     `json:"name,omitempty"`
}

// RenderWire renders msgs with tools (a JSON array or nil) and kwargs (a JSON object of extra template
// variables or nil; a "tools" key in it is replaced by tools when tools is set).
func (t *Template) RenderWire(msgs []WireMessage, tools json.RawMessage, addGenerationPrompt bool, kwargs json.RawMessage) (string, error) {
	mj, err := json.Marshal(msgs)
	if err != nil {
		return "", fmt.Errorf("chat: encoding messages: %w", err)
	}
	vars := map[string]json.RawMessage{}
	if k := bytes.TrimSpace(kwargs); len(k) > 0 && string(k) != "null" {
		if err := json.Unmarshal(k, &vars); err != nil {
			return "", fmt.Errorf("chat: template variables: %w", err)
		}
	}
	if tools != nil {
		vars["tools"] = tools
	}
	var extra json.RawMessage
	if len(vars) > 0 {
		if extra, err = json.Marshal(vars); err != nil {
			return "", fmt.Errorf("chat: template variables: %w", err)
		}
	}
	return t.RenderJSON(mj, addGenerationPrompt, extra)
}

// ToolFormat names how a template's model writes tool calls (vLLM's tool parser names).
type ToolFormat string

const (
	// ToolFormatNone: no known tool-call format in the template.
	ToolFormatNone ToolFormat = ""
	// ToolFormatHermes: `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`, one block per call
	// (Hermes, Qwen2.5, Qwen3, and templates derived from them).
	ToolFormatHermes ToolFormat = "hermes"
	// ToolFormatLlama3JSON: the whole message is `{"name": ..., "parameters": {...}}` (Llama 3.1/3.2/3.3).
	ToolFormatLlama3JSON ToolFormat = "llama3_json"
)

// ToolCallFormat recognises the tool-call format from the template source: `<tool_call>` is Hermes;
// a Llama-3 header template that writes `"parameters"` and knows the ipython role is Llama 3.1+ JSON.
func (t *Template) ToolCallFormat() ToolFormat {
	s := t.source
	switch {
	case strings.Contains(s, "<tool_call>"):
		return ToolFormatHermes
	case strings.Contains(s, "<|start_header_id|>") && strings.Contains(s, `"parameters"`) && strings.Contains(s, "ipython"):
		return ToolFormatLlama3JSON
	}
	return ToolFormatNone
}

// RenderConversation renders an OpenAI-style conversation (tool calls, tool results) with a tools list
// (nil for none) and extra template variables, as apply_chat_template(messages, tools=tools, **kwargs)
// does. function.arguments are passed as objects (what transformers documents and Qwen/Llama templates
// `tojson`); a template that fails on that gets them as JSON strings (DeepSeek concatenates them), and
// then a null content as "". A template that ignores the tools list, drops tool calls or drops tool
// results gives an error wrapping ErrTemplateNoTools.
func (t *Template) RenderConversation(msgs []WireMessage, tools json.RawMessage, addGenerationPrompt bool, kwargs json.RawMessage) (string, error) {
	hasCalls := false
	for _, m := range msgs {
		hasCalls = hasCalls || len(m.ToolCalls) > 0
	}
	out, err := t.RenderWire(msgs, tools, addGenerationPrompt, kwargs)
	if err != nil && hasCalls {
		for _, v := range [][2]bool{{true, false}, {false, true}, {true, true}} {
			m2 := wireForm(msgs, v[0], v[1])
			if o2, err2 := t.RenderWire(m2, tools, addGenerationPrompt, kwargs); err2 == nil {
				out, msgs, err = o2, m2, nil
				break
			}
		}
	}
	if err != nil {
		return "", err
	}
	if tools != nil {
		without, err := t.RenderWire(msgs, nil, addGenerationPrompt, kwargs)
		if err == nil && without == out {
			return "", fmt.Errorf("tools: %w (it ignores the tools list)", ErrTemplateNoTools)
		}
	}
	if hasCalls {
		alt := make([]WireMessage, len(msgs))
		copy(alt, msgs)
		for i := range alt {
			alt[i].ToolCalls = nil
		}
		without, err := t.RenderWire(alt, tools, addGenerationPrompt, kwargs)
		if err == nil && without == out {
			return "", fmt.Errorf("tool_calls: %w (it drops the tool calls of assistant messages)", ErrTemplateNoTools)
		}
	}
	for i, m := range msgs {
		if m.Role == "tool" && m.Content != nil && strings.TrimSpace(*m.Content) != "" && !strings.Contains(out, strings.TrimSpace(*m.Content)) {
			return "", fmt.Errorf("messages[%d]: %w (it drops \"tool\" messages)", i, ErrTemplateNoTools)
		}
	}
	return out, nil
}

// wireForm copies msgs with arguments as JSON strings (argString) and null contents as "" (nullString).
func wireForm(msgs []WireMessage, argString, nullString bool) []WireMessage {
	out := make([]WireMessage, len(msgs))
	empty := ""
	for i, m := range msgs {
		if nullString && m.Content == nil {
			m.Content = &empty
		}
		if argString && len(m.ToolCalls) > 0 {
			calls := make([]WireCall, len(m.ToolCalls))
			for j, c := range m.ToolCalls {
				if a := bytes.TrimSpace(c.Function.Arguments); len(a) > 0 && a[0] != '"' {
					c.Function.Arguments, _ = json.Marshal(string(a))
				}
				calls[j] = c
			}
			m.ToolCalls = calls
		}
		out[i] = m
	}
	return out
}
