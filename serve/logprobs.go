package serve

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/lorakit/lorakit/serve/engine"
	"github.com/lorakit/lorakit/serve/openai"
)

// tokenTexts names the tokens of one choice in logprobs: each token's string is the text it completes, so
// that the strings join to the text (a SentencePiece "▁" is its space; the bytes of a character split over
// byte-fallback or byte-level tokens go to the token that completes it, the others get ""), and `bytes` is the
// token's own bytes. off is the text_offset (in characters) of the next token.
type tokenTexts struct {
	m    Model
	pend []byte
	off  int
}

// next is token id's string and bytes.
func (t *tokenTexts) next(id int) (string, []byte) {
	b := t.m.TokenBytes(id)
	return t.add(b), b
}

func (t *tokenTexts) add(b []byte) string {
	t.pend = append(t.pend, b...)
	n := len(t.pend) - incompleteTail(t.pend)
	s := strings.ToValidUTF8(string(t.pend[:n]), "\uFFFD")
	t.pend = append(t.pend[:0], t.pend[n:]...)
	return s
}

// incompleteTail is the length of a trailing UTF-8 sequence that more bytes could complete.
func incompleteTail(b []byte) int {
	for k := 1; k <= 3 && k <= len(b); k++ {
		c := b[len(b)-k]
		if c < 0x80 {
			return 0
		}
		if c >= 0xC0 { // a start byte: incomplete when it announces more bytes than follow
			if !utf8.FullRune(b[len(b)-k:]) {
				return k
			}
			return 0
		}
	}
	return 0
}

// tokenKey names an alternative token in top_logprobs: its text when its bytes are whole UTF-8, "bytes:\xNN…"
// (as vLLM writes them) when they are part of a character, a special token's own string. Distinct tokens get
// distinct keys, so a map of alternatives never loses one.
func (s *Server) tokenKey(id int) (string, []byte) {
	b := s.model.TokenBytes(id)
	switch {
	case len(b) == 0:
		t := s.model.TokenText(id)
		return t, []byte(t)
	case utf8.Valid(b):
		return string(b), b
	}
	var sb strings.Builder
	sb.WriteString("bytes:")
	for _, c := range b {
		fmt.Fprintf(&sb, `\x%02x`, c)
	}
	return sb.String(), b
}

func intBytes(b []byte) []int {
	out := make([]int, len(b))
	for i, c := range b {
		out[i] = int(c)
	}
	return out
}

func (s *Server) chatLogprobs(tt *tokenTexts, toks []engine.TokenLogprob) *openai.ChatLogprobs {
	lp := &openai.ChatLogprobs{Content: make([]openai.TokenLogprob, 0, len(toks))}
	for _, t := range toks {
		txt, b := tt.next(t.ID)
		tl := openai.TokenLogprob{Token: txt, Logprob: float64(t.Logprob), Bytes: intBytes(b), TopLogprobs: []openai.TopLogprob{}}
		for _, a := range t.Top {
			key, ab := s.tokenKey(a.ID)
			tl.TopLogprobs = append(tl.TopLogprobs, openai.TopLogprob{Token: key, Logprob: float64(a.Logprob), Bytes: intBytes(ab)})
		}
		lp.Content = append(lp.Content, tl)
	}
	return lp
}

// completionLogprobs is the legacy logprobs object of toks (top_logprobs: see topLogprobs).
func (s *Server) completionLogprobs(tt *tokenTexts, toks []engine.TokenLogprob) *openai.CompletionLogprobs {
	lp := &openai.CompletionLogprobs{Tokens: []string{}, TokenLogprobs: []*float64{}, TopLogprobs: []map[string]float64{}, TextOffset: []int{}}
	for _, t := range toks {
		txt, _ := tt.next(t.ID)
		lp.Tokens = append(lp.Tokens, txt)
		v := float64(t.Logprob)
		lp.TokenLogprobs = append(lp.TokenLogprobs, &v)
		lp.TopLogprobs = append(lp.TopLogprobs, s.topLogprobs(t))
		lp.TextOffset = append(lp.TextOffset, tt.off)
		tt.off += utf8.RuneCountInString(txt)
	}
	return lp
}

// topLogprobs is the legacy top_logprobs object of one token: unique keys, a second token with the same key
// named "token_id:N" (vLLM's form).
func (s *Server) topLogprobs(t engine.TokenLogprob) map[string]float64 {
	top := make(map[string]float64, len(t.Top))
	for _, a := range t.Top {
		key, _ := s.tokenKey(a.ID)
		if _, dup := top[key]; dup {
			key = "token_id:" + strconv.Itoa(a.ID)
		}
		top[key] = float64(a.Logprob)
	}
	return top
}

// echoLogprobs is the logprobs object of an echoed prompt: the first token has no logprob (null, as OpenAI
// sends it), the others the model's log probabilities of the prompt.
func (s *Server) echoLogprobs(tt *tokenTexts, prompt []int, toks []engine.TokenLogprob) *openai.CompletionLogprobs {
	lp := &openai.CompletionLogprobs{Tokens: []string{}, TokenLogprobs: []*float64{}, TopLogprobs: []map[string]float64{}, TextOffset: []int{}}
	pieces := s.model.Pieces(prompt)
	for i := range prompt {
		txt := tt.add(pieces[i])
		lp.Tokens = append(lp.Tokens, txt)
		lp.TextOffset = append(lp.TextOffset, tt.off)
		tt.off += utf8.RuneCountInString(txt)
		if i == 0 || i-1 >= len(toks) {
			lp.TokenLogprobs = append(lp.TokenLogprobs, nil)
			lp.TopLogprobs = append(lp.TopLogprobs, nil)
			continue
		}
		t := toks[i-1]
		v := float64(t.Logprob)
		lp.TokenLogprobs = append(lp.TokenLogprobs, &v)
		lp.TopLogprobs = append(lp.TopLogprobs, s.topLogprobs(t))
	}
	return lp
}

// appendLogprobs appends b's entries to a.
func appendLogprobs(a, b *openai.CompletionLogprobs) *openai.CompletionLogprobs {
	if a == nil {
		return b
	}
	a.Tokens = append(a.Tokens, b.Tokens...)
	a.TokenLogprobs = append(a.TokenLogprobs, b.TokenLogprobs...)
	a.TopLogprobs = append(a.TopLogprobs, b.TopLogprobs...)
	a.TextOffset = append(a.TextOffset, b.TextOffset...)
	return a
}
