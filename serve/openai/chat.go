package openai

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// ChatCompletionRequest is `POST /v1/chat/completions` (fields lorakit reads; others are accepted and ignored).
type ChatCompletionRequest struct {
	Model               string          `json:"model"`
	Messages            []ChatMessageIn `json:"messages"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Logprobs            *bool           `json:"logprobs"`
	TopLogprobs         *int            `json:"top_logprobs"`
	Stream              bool            `json:"stream"`
	StreamOptions       *StreamOptions  `json:"stream_options"`
	Tools               json.RawMessage `json:"tools"`
	ToolChoice          json.RawMessage `json:"tool_choice"`
	// ParallelToolCalls false keeps only the first tool call of a completion.
	ParallelToolCalls *bool `json:"parallel_tool_calls"`
	// ChatTemplateKwargs are extra chat-template variables (vLLM extension), e.g. {"enable_thinking": false}.
	ChatTemplateKwargs json.RawMessage `json:"chat_template_kwargs"`
	samplingFields
	guideFields
}

// ChatMessageIn is one request message. Content is a string, an array of text parts, or null.
type ChatMessageIn struct {
	Role             string          `json:"role"`
	Content          json.RawMessage `json:"content"`
	Name             string          `json:"name,omitempty"`
	ReasoningContent *string         `json:"reasoning_content,omitempty"`
	Reasoning        *string         `json:"reasoning,omitempty"`
	ToolCalls        json.RawMessage `json:"tool_calls,omitempty"`
	ToolCallID       string          `json:"tool_call_id,omitempty"`
}

// Message is a decoded chat message ready for the chat template.
type Message struct {
	Role, Content, ReasoningContent string
	// NullContent: an assistant message whose content was null or absent (it only calls tools).
	NullContent bool
	// ToolCalls are an assistant message's calls; ToolCallID and Name belong to a "tool" result.
	ToolCalls        []ToolCall
	ToolCallID, Name string
}

// Chat is a validated chat request.
type Chat struct {
	Model        string
	Messages     []Message
	Sampling     Sampling
	Stream       bool
	IncludeUsage bool
	// TemplateKwargs is a JSON object of extra chat-template variables, or nil.
	TemplateKwargs json.RawMessage
	// Tools is the request's tools list (a JSON array) or nil; ToolChoice is ToolChoiceAuto, ToolChoiceNone or
	// ToolChoiceRequired (tools are rendered either way, as vLLM does; calls are parsed unless none).
	Tools      json.RawMessage
	ToolChoice string
	// SingleToolCall (parallel_tool_calls false) keeps only the first parsed call.
	SingleToolCall bool
	// Guide is the output constraint (response_format, guided_*, tool_choice "required" or named), or nil.
	Guide *Guide
}

var chatRoles = map[string]bool{"system": true, "developer": true, "user": true, "assistant": true, "tool": true}

// DecodeChat parses and validates a chat completion request body. vocab bounds logit_bias keys (0 = unchecked).
func DecodeChat(body []byte, vocab int) (*Chat, *Error) {
	var r ChatCompletionRequest
	if e := decodeJSON(body, &r); e != nil {
		return nil, e
	}
	if r.Model == "" {
		return nil, BadRequest("model", "you must provide a model parameter")
	}
	if len(r.Messages) == 0 {
		return nil, BadRequest("messages", "messages must be a non-empty array")
	}
	tools, e := decodeTools(r.Tools)
	if e != nil {
		return nil, e
	}
	choice, e := decodeToolChoice(r.ToolChoice, tools)
	if e != nil {
		return nil, e
	}
	guide, e := r.guide()
	if e != nil {
		return nil, e
	}
	c := &Chat{Model: r.Model, Stream: r.Stream, Tools: tools, ToolChoice: choice.mode,
		SingleToolCall: r.ParallelToolCalls != nil && !*r.ParallelToolCalls, Guide: guide}
	if choice.mode == ToolChoiceRequired {
		if guide != nil {
			return nil, BadRequest(guide.Param, "%s cannot be combined with tool_choice %q", guide.Param, r.ToolChoice)
		}
		c.Guide = &Guide{Kind: GuideToolCall, Param: "tool_choice", Tools: tools, ToolName: choice.name,
			Parallel: choice.name == "" && !c.SingleToolCall}
	}
	if kw := bytes.TrimSpace(r.ChatTemplateKwargs); len(kw) > 0 && !bytes.Equal(kw, []byte("null")) {
		if e := checkTemplateKwargs(kw); e != nil {
			return nil, e
		}
		c.TemplateKwargs = kw
	}
	if r.StreamOptions != nil {
		if !r.Stream {
			return nil, BadRequest("stream_options", "stream_options is only allowed when stream is true")
		}
		c.IncludeUsage = r.StreamOptions.IncludeUsage
	}
	for i, m := range r.Messages {
		msg, e := decodeMessage(i, m)
		if e != nil {
			return nil, e
		}
		c.Messages = append(c.Messages, msg)
	}
	s, e := r.resolve(vocab)
	if e != nil {
		return nil, e
	}
	mt, e := maxTokens("max_tokens", r.MaxTokens)
	if e != nil {
		return nil, e
	}
	if r.MaxCompletionTokens != nil {
		if mt, e = maxTokens("max_completion_tokens", r.MaxCompletionTokens); e != nil {
			return nil, e
		}
	}
	s.MaxTokens = mt
	if r.Logprobs != nil {
		s.Logprobs = *r.Logprobs
	}
	if r.TopLogprobs != nil {
		if *r.TopLogprobs < 0 || *r.TopLogprobs > 20 {
			return nil, BadRequest("top_logprobs", "top_logprobs must be between 0 and 20, got %d", *r.TopLogprobs)
		}
		if !s.Logprobs && *r.TopLogprobs > 0 {
			return nil, BadRequest("top_logprobs", "top_logprobs requires logprobs to be true")
		}
		s.TopLogprobs = *r.TopLogprobs
	}
	c.Sampling = s
	return c, nil
}

// reservedTemplateVars are the variables the server itself gives the chat template. A request's
// chat_template_kwargs may not replace them: a gateway that injects a system message, or the server's own
// bos/eos and tools, must not be undone by a client (vLLM GHSA-6fvq-23cw-5628).
var reservedTemplateVars = map[string]bool{"messages": true, "add_generation_prompt": true, "bos_token": true,
	"eos_token": true, "tools": true, "documents": true, "chat_template": true, "continue_final_message": true,
	"tokenize": true, "raise_exception": true, "strftime_now": true, "tool_choice": true}

// checkTemplateKwargs accepts a JSON object whose keys are not reserved template variables.
func checkTemplateKwargs(kw []byte) *Error {
	var m map[string]json.RawMessage
	if kw[0] != '{' || json.Unmarshal(kw, &m) != nil {
		return BadRequest("chat_template_kwargs", "chat_template_kwargs must be a JSON object")
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if reservedTemplateVars[k] || strings.HasPrefix(k, "lorakit_") {
			return BadRequest("chat_template_kwargs."+k, "chat_template_kwargs may not set %q: the server sets it (pass messages and tools as request fields)", k)
		}
	}
	return nil
}

func decodeMessage(i int, m ChatMessageIn) (Message, *Error) {
	param := fmt.Sprintf("messages[%d]", i)
	if !chatRoles[m.Role] {
		return Message{}, BadRequest(param+".role", "messages[%d].role must be one of system, developer, user, assistant, tool; got %q", i, m.Role)
	}
	msg := Message{Role: m.Role}
	if m.Role == "developer" {
		msg.Role = "system"
	}
	if m.ReasoningContent != nil {
		msg.ReasoningContent = *m.ReasoningContent
	} else if m.Reasoning != nil {
		msg.ReasoningContent = *m.Reasoning
	}
	if m.Role == "assistant" {
		calls, e := decodeToolCalls(i, m.ToolCalls)
		if e != nil {
			return Message{}, e
		}
		msg.ToolCalls = calls
	} else if t := bytes.TrimSpace(m.ToolCalls); len(t) > 0 && string(t) != "null" && string(t) != "[]" {
		return Message{}, BadRequest(param+".tool_calls", "messages[%d].tool_calls is only allowed on assistant messages", i)
	}
	if m.Role == "tool" {
		if m.ToolCallID == "" {
			return Message{}, BadRequest(param+".tool_call_id", "messages[%d].tool_call_id is required for role \"tool\"", i)
		}
		msg.ToolCallID, msg.Name = m.ToolCallID, m.Name
	}
	raw := bytes.TrimSpace(m.Content)
	switch {
	case len(raw) == 0 || bytes.Equal(raw, []byte("null")):
		msg.NullContent = true
		if m.Role != "assistant" {
			return Message{}, BadRequest(param+".content", "messages[%d].content is required for role %q", i, m.Role)
		}
	case raw[0] == '"':
		if err := json.Unmarshal(raw, &msg.Content); err != nil {
			return Message{}, BadRequest(param+".content", "messages[%d].content: %v", i, err)
		}
	case raw[0] == '[':
		var parts []struct {
			Type    string  `json:"type"`
			Text    *string `json:"text"`
			Refusal *string `json:"refusal"`
		}
		if err := json.Unmarshal(raw, &parts); err != nil {
			return Message{}, BadRequest(param+".content", "messages[%d].content must be a string or an array of content parts: %v", i, err)
		}
		for j, p := range parts {
			switch {
			case p.Type == "text" && p.Text != nil:
				msg.Content += *p.Text
			case p.Type == "refusal" && p.Refusal != nil && m.Role == "assistant":
				msg.Content += *p.Refusal
			default:
				return Message{}, BadRequest(fmt.Sprintf("%s.content[%d]", param, j),
					"messages[%d].content[%d]: content part type %q is not supported (only text)", i, j, p.Type)
			}
		}
	default:
		return Message{}, BadRequest(param+".content", "messages[%d].content must be a string or an array of content parts", i)
	}
	return msg, nil
}

// ChatCompletion is the non-streaming response.
type ChatCompletion struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"` // "chat.completion"
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	Choices           []ChatChoice `json:"choices"`
	Usage             Usage        `json:"usage"`
	SystemFingerprint string       `json:"system_fingerprint"`
}

// ChatChoice is one non-streaming choice.
type ChatChoice struct {
	Index        int            `json:"index"`
	Message      ChatMessageOut `json:"message"`
	Logprobs     *ChatLogprobs  `json:"logprobs"`
	FinishReason string         `json:"finish_reason"`
}

// ChatMessageOut is the assistant message of a response.
type ChatMessageOut struct {
	Role             string         `json:"role"`
	Content          *string        `json:"content"`
	Refusal          *string        `json:"refusal"`
	ReasoningContent *string        `json:"reasoning_content,omitempty"`
	ToolCalls        []ChatToolCall `json:"tool_calls,omitempty"`
}

// ChatLogprobs is choice.logprobs of chat responses.
type ChatLogprobs struct {
	Content []TokenLogprob `json:"content"`
}

// TokenLogprob is one generated token with its log probability and alternatives.
type TokenLogprob struct {
	Token       string       `json:"token"`
	Logprob     float64      `json:"logprob"`
	Bytes       []int        `json:"bytes"`
	TopLogprobs []TopLogprob `json:"top_logprobs"`
}

// TopLogprob is an alternative token.
type TopLogprob struct {
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

// ChatCompletionChunk is one SSE event of a streamed chat completion.
type ChatCompletionChunk struct {
	ID                string            `json:"id"`
	Object            string            `json:"object"` // "chat.completion.chunk"
	Created           int64             `json:"created"`
	Model             string            `json:"model"`
	SystemFingerprint string            `json:"system_fingerprint"`
	Choices           []ChatChunkChoice `json:"choices"`
	// Usage is omitted unless stream_options.include_usage; then it is null on every chunk but the last.
	Usage any `json:"usage,omitempty"`
}

// ChatChunkChoice is one choice of a chunk.
type ChatChunkChoice struct {
	Index        int           `json:"index"`
	Delta        ChatDelta     `json:"delta"`
	Logprobs     *ChatLogprobs `json:"logprobs"`
	FinishReason *string       `json:"finish_reason"`
}

// ChatDelta is the incremental message of a chunk.
type ChatDelta struct {
	Role             string              `json:"role,omitempty"`
	Content          *string             `json:"content,omitempty"`
	ReasoningContent *string             `json:"reasoning_content,omitempty"`
	ToolCalls        []ChatToolCallDelta `json:"tool_calls,omitempty"`
}

// NullUsage marshals as JSON null (for chunks when include_usage is set).
var NullUsage = json.RawMessage("null")
