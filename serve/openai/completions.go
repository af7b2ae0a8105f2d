package openai

import (
	"bytes"
	"encoding/json"
)

// CompletionRequest is `POST /v1/completions`.
type CompletionRequest struct {
	Model         string          `json:"model"`
	Prompt        json.RawMessage `json:"prompt"`
	MaxTokens     *int            `json:"max_tokens"`
	Echo          bool            `json:"echo"`
	Suffix        *string         `json:"suffix"`
	Logprobs      *int            `json:"logprobs"`
	BestOf        *int            `json:"best_of"`
	Stream        bool            `json:"stream"`
	StreamOptions *StreamOptions  `json:"stream_options"`
	samplingFields
	guideFields
}

// Prompt is one completion prompt: text or token ids.
type Prompt struct {
	Text string
	IDs  []int // non-nil when the prompt was given as token ids
}

// Completion is a validated completions request.
type Completion struct {
	Model        string
	Prompts      []Prompt
	Echo         bool
	Sampling     Sampling
	Stream       bool
	IncludeUsage bool
	// Guide is the output constraint (response_format, guided_*), or nil.
	Guide *Guide
}

// DefaultCompletionMaxTokens is OpenAI's default max_tokens for /v1/completions.
const DefaultCompletionMaxTokens = 16

// DecodeCompletion parses and validates a completions request body.
func DecodeCompletion(body []byte, vocab int) (*Completion, *Error) {
	return DecodeCompletionLimit(body, vocab, 0)
}

// DecodeCompletionLimit is DecodeCompletion refusing more than maxPrompts prompts (0: no limit) as soon as the
// decoder meets one more, before building them.
func DecodeCompletionLimit(body []byte, vocab, maxPrompts int) (*Completion, *Error) {
	var r CompletionRequest
	if e := decodeJSON(body, &r); e != nil {
		return nil, e
	}
	if r.Model == "" {
		return nil, BadRequest("model", "you must provide a model parameter")
	}
	c := &Completion{Model: r.Model, Stream: r.Stream, Echo: r.Echo}
	prompts, e := decodePrompt(r.Prompt, vocab, maxPrompts)
	if e != nil {
		return nil, e
	}
	c.Prompts = prompts
	if c.Guide, e = r.guide(); e != nil {
		return nil, e
	}
	if r.Suffix != nil && *r.Suffix != "" {
		return nil, BadRequest("suffix", "suffix is not supported by this server")
	}
	if r.StreamOptions != nil {
		if !r.Stream {
			return nil, BadRequest("stream_options", "stream_options is only allowed when stream is true")
		}
		c.IncludeUsage = r.StreamOptions.IncludeUsage
	}
	s, e := r.resolve(vocab)
	if e != nil {
		return nil, e
	}
	if r.BestOf != nil && (*r.BestOf < 1 || *r.BestOf > s.N) {
		return nil, BadRequest("best_of", "best_of must be at least 1 and at most n (only best_of == n is supported), got %d", *r.BestOf)
	}
	s.MaxTokens = DefaultCompletionMaxTokens
	if r.MaxTokens != nil {
		if *r.MaxTokens < 0 {
			return nil, BadRequest("max_tokens", "max_tokens must be at least 0, got %d", *r.MaxTokens)
		}
		s.MaxTokens = *r.MaxTokens
		if s.MaxTokens == 0 && !r.Echo {
			return nil, BadRequest("max_tokens", "max_tokens must be at least 1 unless echo is true")
		}
	}
	if r.Logprobs != nil {
		if *r.Logprobs < 0 || *r.Logprobs > 5 {
			return nil, BadRequest("logprobs", "logprobs must be between 0 and 5, got %d", *r.Logprobs)
		}
		s.Logprobs = true
		s.TopLogprobs = *r.Logprobs
		s.PromptLogprobs = r.Echo
	}
	c.Sampling = s
	return c, nil
}

func decodePrompt(raw json.RawMessage, vocab, maxPrompts int) ([]Prompt, *Error) {
	raw = bytes.TrimSpace(raw)
	bad := BadRequest("prompt", "prompt must be a string, an array of strings, an array of token ids, or an array of token-id arrays")
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, BadRequest("prompt", "you must provide a prompt parameter")
	}
	checkIDs := func(ids []int) *Error {
		if len(ids) == 0 {
			return BadRequest("prompt", "a token-id prompt must not be empty")
		}
		for _, id := range ids {
			if id < 0 || (vocab > 0 && id >= vocab) {
				return BadRequest("prompt", "token id %d is out of range [0, %d)", id, vocab)
			}
		}
		return nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, bad
		}
		return []Prompt{{Text: s}}, nil
	case '[':
		return decodePromptList(raw, vocab, maxPrompts, bad, checkIDs)
	}
	return nil, bad
}

// decodePromptList decodes a prompt array one item at a time, so a request with too many prompts is refused
// without building them: an array of strings, an array of token-id arrays, or one array of token ids.
func decodePromptList(raw []byte, vocab, maxPrompts int, bad *Error, checkIDs func([]int) *Error) ([]Prompt, *Error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil { // '['
		return nil, bad
	}
	var out []Prompt
	for dec.More() {
		if maxPrompts > 0 && len(out) >= maxPrompts {
			return nil, BadRequest("prompt", "this server takes at most %d prompts per request (--max-queue)", maxPrompts)
		}
		var item json.RawMessage
		if err := dec.Decode(&item); err != nil {
			return nil, bad
		}
		switch item[0] {
		case '"':
			var s string
			if len(out) > 0 && out[0].IDs != nil || json.Unmarshal(item, &s) != nil {
				return nil, bad
			}
			out = append(out, Prompt{Text: s})
		case '[':
			var ids []int
			if len(out) > 0 && out[0].IDs == nil || json.Unmarshal(item, &ids) != nil {
				return nil, bad
			}
			if e := checkIDs(ids); e != nil {
				return nil, e
			}
			out = append(out, Prompt{IDs: ids})
		default: // one prompt of token ids
			if len(out) > 0 {
				return nil, bad
			}
			var ids []int
			if err := json.Unmarshal(raw, &ids); err != nil {
				return nil, bad
			}
			if e := checkIDs(ids); e != nil {
				return nil, e
			}
			return []Prompt{{IDs: ids}}, nil
		}
	}
	if len(out) == 0 {
		return nil, BadRequest("prompt", "prompt must not be an empty array")
	}
	return out, nil
}

// CompletionResponse is the text_completion response (also each streamed chunk).
type CompletionResponse struct {
	ID                string             `json:"id"`
	Object            string             `json:"object"` // "text_completion"
	Created           int64              `json:"created"`
	Model             string             `json:"model"`
	SystemFingerprint string             `json:"system_fingerprint"`
	Choices           []CompletionChoice `json:"choices"`
	Usage             any                `json:"usage,omitempty"`
}

// CompletionChoice is one completion choice.
type CompletionChoice struct {
	Text         string              `json:"text"`
	Index        int                 `json:"index"`
	Logprobs     *CompletionLogprobs `json:"logprobs"`
	FinishReason *string             `json:"finish_reason"`
}

// CompletionLogprobs is the legacy logprobs object of /v1/completions.
type CompletionLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []*float64           `json:"token_logprobs"` // null for an echoed prompt's first token
	TopLogprobs   []map[string]float64 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}
