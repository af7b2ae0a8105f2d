package openai

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"unicode"
)

// Stop is the `stop` field: a string or a list of strings.
type Stop []string

// UnmarshalJSON accepts null, "s" or ["a","b"].
func (s *Stop) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		*s = nil
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var one string
		if err := json.Unmarshal(b, &one); err != nil {
			return err
		}
		*s = Stop{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("stop must be a string or an array of strings")
	}
	*s = many
	return nil
}

// StreamOptions is `stream_options`.
type StreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// Usage is the token accounting of a response.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// Sampling is the validated, defaulted sampling part shared by chat and completions.
type Sampling struct {
	MaxTokens         int // 0 = up to the context window
	Temperature       float32
	TopP, MinP        float32
	TopK              int
	RepetitionPenalty float32
	PresencePenalty   float32
	FrequencyPenalty  float32
	Seed              *int64
	Stop              []string
	N                 int
	LogitBias         map[int]float32
	Logprobs          bool
	TopLogprobs       int
	PromptLogprobs    bool // the prompt's logprobs too (completions with echo)
	IgnoreEOS         bool // vLLM extension: keep generating past EOS
}

// samplingFields are the sampling fields both request kinds carry (pointers: absent ≠ zero).
type samplingFields struct {
	Temperature       *float64           `json:"temperature"`
	TopP              *float64           `json:"top_p"`
	TopK              *int               `json:"top_k"`
	MinP              *float64           `json:"min_p"`
	RepetitionPenalty *float64           `json:"repetition_penalty"`
	PresencePenalty   *float64           `json:"presence_penalty"`
	FrequencyPenalty  *float64           `json:"frequency_penalty"`
	Seed              *int64             `json:"seed"`
	Stop              Stop               `json:"stop"`
	N                 *int               `json:"n"`
	LogitBias         map[string]float64 `json:"logit_bias"`
	IgnoreEOS         bool               `json:"ignore_eos"`
}

const maxStops = 16

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// complexity: one range check per OpenAI sampling field, each naming the field.
func (f *samplingFields) resolve(vocab int) (Sampling, *Error) {
	s := Sampling{Temperature: 1, TopP: 1, RepetitionPenalty: 1, N: 1, Seed: f.Seed, IgnoreEOS: f.IgnoreEOS}
	if f.Temperature != nil {
		if !finite(*f.Temperature) || *f.Temperature < 0 || *f.Temperature > 2 {
			return s, BadRequest("temperature", "temperature must be between 0 and 2, got %v", *f.Temperature)
		}
		s.Temperature = float32(*f.Temperature)
	}
	if f.TopP != nil {
		if !finite(*f.TopP) || *f.TopP <= 0 || *f.TopP > 1 {
			return s, BadRequest("top_p", "top_p must be in (0, 1], got %v", *f.TopP)
		}
		s.TopP = float32(*f.TopP)
	}
	if f.TopK != nil {
		if *f.TopK < -1 {
			return s, BadRequest("top_k", "top_k must be -1 (disabled), 0 (disabled) or positive, got %d", *f.TopK)
		}
		if *f.TopK > 0 {
			s.TopK = *f.TopK
		}
	}
	if f.MinP != nil {
		if !finite(*f.MinP) || *f.MinP < 0 || *f.MinP > 1 {
			return s, BadRequest("min_p", "min_p must be in [0, 1], got %v", *f.MinP)
		}
		s.MinP = float32(*f.MinP)
	}
	if f.RepetitionPenalty != nil {
		if !finite(*f.RepetitionPenalty) || *f.RepetitionPenalty <= 0 || *f.RepetitionPenalty > 10 {
			return s, BadRequest("repetition_penalty", "repetition_penalty must be in (0, 10], got %v", *f.RepetitionPenalty)
		}
		s.RepetitionPenalty = float32(*f.RepetitionPenalty)
	}
	for _, p := range []struct {
		name string
		v    *float64
		dst  *float32
	}{{"presence_penalty", f.PresencePenalty, &s.PresencePenalty}, {"frequency_penalty", f.FrequencyPenalty, &s.FrequencyPenalty}} {
		if p.v == nil {
			continue
		}
		if !finite(*p.v) || *p.v < -2 || *p.v > 2 {
			return s, BadRequest(p.name, "%s must be between -2 and 2, got %v", p.name, *p.v)
		}
		*p.dst = float32(*p.v)
	}
	if f.N != nil {
		if *f.N < 1 || *f.N > 128 {
			return s, BadRequest("n", "n must be between 1 and 128, got %d", *f.N)
		}
		s.N = *f.N
	}
	if len(f.Stop) > maxStops {
		return s, BadRequest("stop", "at most %d stop sequences are allowed, got %d", maxStops, len(f.Stop))
	}
	for _, st := range f.Stop {
		if st != "" {
			s.Stop = append(s.Stop, st)
		}
	}
	if len(f.LogitBias) > 0 {
		s.LogitBias = make(map[int]float32, len(f.LogitBias))
		for k, v := range f.LogitBias {
			// Only the canonical decimal form: "+5" and "05" would both name token 5, and which of two such
			// keys won would depend on map order.
			id, err := strconv.Atoi(k)
			if err != nil || id < 0 || strconv.Itoa(id) != k || (vocab > 0 && id >= vocab) {
				return s, BadRequest("logit_bias", "logit_bias key %q is not a token id in [0, %d) written in plain decimal (no sign, no leading zeros)", k, vocab)
			}
			if !finite(v) || v < -100 || v > 100 {
				return s, BadRequest("logit_bias", "logit_bias value for token %d must be between -100 and 100, got %v", id, v)
			}
			s.LogitBias[id] = float32(v)
		}
	}
	return s, nil
}

func maxTokens(param string, v *int) (int, *Error) {
	if v == nil {
		return 0, nil
	}
	if *v < 1 {
		return 0, BadRequest(param, "%s must be at least 1, got %d", param, *v)
	}
	return *v, nil
}

// wireField is the JSON path of a decoding error without the Go names of embedded structs
// ("samplingFields.temperature" → "temperature").
func wireField(f string) string {
	parts := strings.Split(f, ".")
	out := parts[:0]
	for _, p := range parts {
		if p != "" && unicode.IsLower(rune(p[0])) && strings.ContainsFunc(p, unicode.IsUpper) {
			continue // a Go identifier (camelCase), not a snake_case wire name
		}
		out = append(out, p)
	}
	return strings.Join(out, ".")
}

// jsonKind names a Go type the way a client sees it in JSON.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "a value"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "a value"
}

// decodeJSON decodes body into v with an OpenAI error for malformed JSON or wrong field types.
func decodeJSON(body []byte, v any) *Error {
	if len(bytes.TrimSpace(body)) == 0 {
		return BadRequest("", "The request body is empty; expected a JSON object.")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		switch e := err.(type) {
		case *json.UnmarshalTypeError:
			field := wireField(e.Field)
			if field == "" {
				return BadRequest("", "Invalid type for the request body: expected a JSON object, got JSON %s.", e.Value)
			}
			return BadRequest(field, "Invalid type for '%s': expected %s, got JSON %s.", field, jsonKind(e.Type), e.Value)
		case *json.SyntaxError:
			return BadRequest("", "We could not parse the JSON body of your request: %v (at byte %d).", e, e.Offset)
		default:
			return BadRequest("", "We could not parse the JSON body of your request: %v", err)
		}
	}
	if dec.More() {
		return BadRequest("", "The request body holds more than one JSON value.")
	}
	return nil
}
