// Package stop is when generation ends: end-of-sequence ids, the chat template's end of turn, stop strings and
// the token budget. models.Generate, lorakit eval and the serving engine step through the same Rule, so a model
// stops at the same token whichever command runs it.
package stop

import "strings"

// Finish reasons, as OpenAI's finish_reason names them.
const (
	Stop   = "stop"   // an EOS or end-of-turn id, or a stop string
	Length = "length" // the token budget is spent
)

// Turn is how generation recognises the end of an assistant turn.
type Turn struct {
	IDs  []int  // a special token that ends the turn (e.g. <|im_end|>, <|eot_id|>, stories260K's <s>)
	Text string // or, when the marker holds no special token, the marker as a stop string
}

// Rule says when one generation ends.
type Rule struct {
	EOS       []int // end-of-sequence ids
	IgnoreEOS bool  // keep going past EOS ids (benchmarks; vLLM's ignore_eos)
	// TurnEnd ends a prompt rendered by the chat template with the generation prompt, even with IgnoreEOS: the
	// turn is over whatever the budget. Plain prompts leave it empty (the marker may be an ordinary token there).
	TurnEnd Turn
	// Strings end generation where one of them first appears in the new text; the text is cut before it.
	Strings   []string
	MaxTokens int // new tokens at most (0: no limit)
}

// Decoder turns ids into text, returning only complete UTF-8 (tokenizer.StreamDecoder).
type Decoder interface {
	Add(id int) string
	Flush() string
}

// Seq applies a Rule to one sequence, token by token.
type Seq struct {
	eos, turn []int
	strs      []string
	max, n    int
	pending   string // decoded text not yet handed out: it may be the start of a stop string
	cut       bool
}

// Start begins a sequence under r.
func (r Rule) Start() *Seq {
	s := &Seq{turn: r.TurnEnd.IDs, max: r.MaxTokens}
	if !r.IgnoreEOS {
		s.eos = r.EOS
	}
	for _, st := range r.Strings {
		if st != "" {
			s.strs = append(s.strs, st)
		}
	}
	if r.TurnEnd.Text != "" {
		s.strs = append(s.strs, r.TurnEnd.Text)
	}
	return s
}

// Tokens is the number of ids Next has taken.
func (s *Seq) Tokens() int { return s.n }

// Cut reports whether a stop string ended the sequence (its text is cut short of what the ids decode to).
func (s *Seq) Cut() bool { return s.cut }

// Next takes the id just sampled (every id counts, the final EOS too) and decodes it with d unless it ends the
// sequence. It returns the text that is now final (never part of a stop string, nor text that may become the
// start of one) and, when generation ends, the reason (Stop or Length) with the rest of the text flushed from d
// and cut before a stop string.
func (s *Seq) Next(id int, d Decoder) (text, reason string) {
	s.n++
	if contains(s.eos, id) || contains(s.turn, id) {
		return s.end(d, Stop)
	}
	s.pending += d.Add(id)
	if cut := s.firstStop(); cut >= 0 {
		text, s.pending, s.cut = s.pending[:cut], "", true
		return text, Stop
	}
	if s.max > 0 && s.n >= s.max {
		return s.end(d, Length)
	}
	hold := 0
	for _, st := range s.strs {
		hold = max(hold, partialSuffix(s.pending, st))
	}
	text, s.pending = s.pending[:len(s.pending)-hold], s.pending[len(s.pending)-hold:]
	return text, ""
}

// End ends the sequence from outside the rule (an output constraint is complete): the rest of the text from d,
// cut before a stop string, and Stop.
func (s *Seq) End(d Decoder) (text, reason string) { return s.end(d, Stop) }

func (s *Seq) end(d Decoder, reason string) (string, string) {
	s.pending += d.Flush()
	if cut := s.firstStop(); cut >= 0 {
		s.pending, reason, s.cut = s.pending[:cut], Stop, true
	}
	text := s.pending
	s.pending = ""
	return text, reason
}

// firstStop is the earliest index in the held text where a stop string begins, or -1. Text already handed out
// cannot hold the start of one: Next keeps back every suffix that is a prefix of a stop string.
func (s *Seq) firstStop() int {
	best := -1
	for _, st := range s.strs {
		if i := strings.Index(s.pending, st); i >= 0 && (best < 0 || i < best) {
			best = i
		}
	}
	return best
}

// partialSuffix is the length of the longest proper suffix of s that is a prefix of stop.
func partialSuffix(s, stop string) int {
	for k := min(len(stop)-1, len(s)); k > 0; k-- {
		if strings.HasSuffix(s, stop[:k]) {
			return k
		}
	}
	return 0
}

func contains(ids []int, id int) bool {
	for _, v := range ids {
		if v == id {
			return true
		}
	}
	return false
}
