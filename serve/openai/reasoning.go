package openai

import "strings"

// Reasoning tags of R1-style thinking models (DeepSeek-R1, Qwen3).
const (
	ThinkOpen  = "<think>"
	ThinkClose = "</think>"
)

// ReasoningSplitter splits streamed model output into reasoning (inside <think>…</think>) and content, the way
// vLLM's deepseek_r1 parser does: output is reasoning from a leading <think> (or from the start when the prompt
// already opened the think block) up to </think>; the rest is content. Tags split across pieces are held back.
type ReasoningSplitter struct {
	state   int // 0 = undecided (looking for a leading <think>), 1 = reasoning, 2 = content
	held    string
	sawOpen bool // reasoning was entered (for Final: content null when </think> never came)
	closed  bool
	trimNL  bool // strip newlines right after </think>
}

// NewReasoningSplitter starts in reasoning mode when the prompt already ends inside a think block.
func NewReasoningSplitter(startInReasoning bool) *ReasoningSplitter {
	s := &ReasoningSplitter{}
	if startInReasoning {
		s.state, s.sawOpen = 1, true
	}
	return s
}

// PromptOpensThink reports whether a rendered prompt ends inside an open <think> block.
func PromptOpensThink(prompt string) bool {
	t := strings.TrimRight(prompt, " \t\r\n")
	return strings.HasSuffix(t, ThinkOpen)
}

// Add consumes one piece of output text and returns what is now known to be reasoning and content.
func (s *ReasoningSplitter) Add(text string) (reasoning, content string) {
	s.held += text
	for {
		switch s.state {
		case 0:
			t := strings.TrimLeft(s.held, " \t\r\n")
			if t == "" {
				return
			}
			if strings.HasPrefix(t, ThinkOpen) {
				s.held, s.state, s.sawOpen = t[len(ThinkOpen):], 1, true
				continue
			}
			if strings.HasPrefix(ThinkOpen, t) {
				return // could still become <think>
			}
			s.state = 2
		case 1:
			if i := strings.Index(s.held, ThinkClose); i >= 0 {
				reasoning += s.held[:i]
				s.held, s.state, s.closed, s.trimNL = s.held[i+len(ThinkClose):], 2, true, true
				continue
			}
			k := partialSuffix(s.held, ThinkClose)
			reasoning += s.held[:len(s.held)-k]
			s.held = s.held[len(s.held)-k:]
			return
		case 2:
			if s.trimNL {
				s.held = strings.TrimLeft(s.held, "\r\n")
				if s.held == "" {
					return
				}
				s.trimNL = false
			}
			content += s.held
			s.held = ""
			return
		}
	}
}

// Flush returns whatever is still held back at the end of the output.
func (s *ReasoningSplitter) Flush() (reasoning, content string) {
	h := s.held
	s.held = ""
	switch s.state {
	case 1:
		return h, ""
	default:
		if s.trimNL {
			h = strings.TrimLeft(h, "\r\n")
		}
		return "", h
	}
}

// InReasoning reports whether reasoning was entered and never closed (then content is null, as in vLLM).
func (s *ReasoningSplitter) InReasoning() bool { return s.sawOpen && !s.closed }

// SawReasoning reports whether any think block was seen.
func (s *ReasoningSplitter) SawReasoning() bool { return s.sawOpen }

// partialSuffix is the length of the longest proper suffix of s that is a prefix of tag.
func partialSuffix(s, tag string) int {
	n := len(tag) - 1
	if n > len(s) {
		n = len(s)
	}
	for k := n; k > 0; k-- {
		if strings.HasSuffix(s, tag[:k]) {
			return k
		}
	}
	return 0
}

// SplitReasoning splits a whole output at once (non-streaming responses).
// reasoning is nil when no think block was seen; content is nil when the think block never closed.
func SplitReasoning(text string, startInReasoning bool) (reasoning, content *string) {
	s := NewReasoningSplitter(startInReasoning)
	r1, c1 := s.Add(text)
	r2, c2 := s.Flush()
	r, c := r1+r2, c1+c2
	if s.SawReasoning() {
		reasoning = &r
	}
	if !s.InReasoning() {
		content = &c
	}
	return reasoning, content
}
