package openai

import (
	"bytes"
	"encoding/json"
)

// TokenizeRequest is vLLM's `POST /tokenize`: a completion prompt, or chat messages rendered with the chat
// template (and its generation prompt).
type TokenizeRequest struct {
	Model               string          `json:"model"`
	Prompt              *string         `json:"prompt"`
	Messages            []ChatMessageIn `json:"messages"`
	AddSpecialTokens    *bool           `json:"add_special_tokens"`
	AddGenerationPrompt *bool           `json:"add_generation_prompt"`
	ReturnTokenStrs     bool            `json:"return_token_strs"`
	Tools               json.RawMessage `json:"tools"`
	ChatTemplateKwargs  json.RawMessage `json:"chat_template_kwargs"`
}

// Tokenize is a validated tokenize request.
type Tokenize struct {
	Model string
	// Prompt is the text (when Messages is nil); AddSpecial adds BOS/EOS as the tokenizer config says
	// (default true for a prompt, false for messages, whose template writes them).
	Prompt     string
	Messages   []Message
	Tools      json.RawMessage
	Kwargs     json.RawMessage
	AddSpecial bool
	TokenStrs  bool
}

// DecodeTokenize parses and validates a tokenize request body.
func DecodeTokenize(body []byte) (*Tokenize, *Error) {
	var r TokenizeRequest
	if e := decodeJSON(body, &r); e != nil {
		return nil, e
	}
	if r.Model == "" {
		return nil, BadRequest("model", "you must provide a model parameter")
	}
	t := &Tokenize{Model: r.Model, TokenStrs: r.ReturnTokenStrs}
	switch {
	case r.Prompt != nil && r.Messages != nil:
		return nil, BadRequest("messages", "give either prompt or messages, not both")
	case r.Prompt != nil:
		t.Prompt, t.AddSpecial = *r.Prompt, true
	case len(r.Messages) > 0:
		for i, m := range r.Messages {
			msg, e := decodeMessage(i, m)
			if e != nil {
				return nil, e
			}
			t.Messages = append(t.Messages, msg)
		}
		if r.AddGenerationPrompt != nil && !*r.AddGenerationPrompt {
			return nil, BadRequest("add_generation_prompt", "add_generation_prompt false is not supported: messages are rendered as a chat request's prompt is")
		}
		tools, e := decodeTools(r.Tools)
		if e != nil {
			return nil, e
		}
		t.Tools = tools
		if !isNull(r.ChatTemplateKwargs) {
			kw := bytes.TrimSpace(r.ChatTemplateKwargs)
			if e := checkTemplateKwargs(kw); e != nil {
				return nil, e
			}
			t.Kwargs = kw
		}
	default:
		return nil, BadRequest("prompt", "you must provide a prompt or messages")
	}
	if r.AddSpecialTokens != nil {
		t.AddSpecial = *r.AddSpecialTokens
	}
	return t, nil
}

// TokenizeResponse is vLLM's /tokenize reply.
type TokenizeResponse struct {
	Count       int      `json:"count"`
	MaxModelLen int      `json:"max_model_len"`
	Tokens      []int    `json:"tokens"`
	TokenStrs   []string `json:"token_strs,omitempty"`
}

// DetokenizeRequest is vLLM's `POST /detokenize`.
type DetokenizeRequest struct {
	Model  string `json:"model"`
	Tokens []int  `json:"tokens"`
}

// DecodeDetokenize parses and validates a detokenize request body; vocab bounds the ids.
func DecodeDetokenize(body []byte, vocab int) (*DetokenizeRequest, *Error) {
	var r DetokenizeRequest
	if e := decodeJSON(body, &r); e != nil {
		return nil, e
	}
	if r.Model == "" {
		return nil, BadRequest("model", "you must provide a model parameter")
	}
	if r.Tokens == nil {
		return nil, BadRequest("tokens", "you must provide tokens (an array of token ids)")
	}
	for i, id := range r.Tokens {
		if id < 0 || id >= vocab {
			return nil, BadRequest("tokens", "tokens[%d] = %d is not a token id in [0, %d)", i, id, vocab)
		}
	}
	return &r, nil
}

// DetokenizeResponse is vLLM's /detokenize reply.
type DetokenizeResponse struct {
	Prompt string `json:"prompt"`
}

// VersionResponse is `GET /version`.
type VersionResponse struct {
	Version string `json:"version"`
}
