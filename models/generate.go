package models

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/sample"
)

// GenerateOptions configure Generate.
type GenerateOptions struct {
	MaxTokens int            // new tokens at most (0: until the context is full)
	Sampling  sample.Options // Temperature 0: greedy
	Stop      []string       // stop when the new text contains one of these (it is cut from Text)
	Adapter   llama.Delta    // nil: base model
	IgnoreEOS bool           // do not stop at EOS ids
	// Chat marks a prompt rendered by the chat template with the generation prompt: generation also stops at
	// the template's end-of-turn marker (see TurnEnd), even with IgnoreEOS. The goldens and plain prompts leave
	// it false.
	Chat bool
	// OnText, if set, receives the new text as it becomes final (never half a UTF-8 character, never part of a
	// stop string). Returning an error stops generation with that error.
	OnText func(text string) error
}

// GenerateResult is the outcome of Generate.
type GenerateResult struct {
	PromptIDs    []int  `json:"prompt_ids"`
	IDs          []int  `json:"ids"`           // new ids, including the EOS id that ended generation, if any
	Text         string `json:"text"`          // new text, special tokens skipped, cut before a stop string
	FinishReason string `json:"finish_reason"` // "stop" (EOS or stop string) or "length"
}

// Generate continues promptIDs. Text is decode(prompt+new) minus decode(prompt) (special tokens skipped), so a
// leading space of the first new token is kept.
func (m *Model) Generate(ctx context.Context, promptIDs []int, o GenerateOptions) (*GenerateResult, error) {
	if len(promptIDs) == 0 {
		return nil, errEmptyPrompt
	}
	maxPos := m.Config.MaxPositionEmbeddings
	if len(promptIDs) >= maxPos {
		return nil, fmt.Errorf("models: generate: prompt of %d tokens fills the context of %d", len(promptIDs), maxPos)
	}
	limit := maxPos - len(promptIDs)
	if o.MaxTokens > 0 {
		limit = min(limit, o.MaxTokens)
	}
	res := &GenerateResult{PromptIDs: slices.Clone(promptIDs), IDs: []int{}, FinishReason: "length"}
	cache := m.Net.NewCache(len(promptIDs) + limit)
	logits, err := m.Net.Forward([]llama.Seq{{Tokens: promptIDs, Cache: cache, Adapter: o.Adapter}})
	if err != nil {
		return nil, err
	}
	step := []llama.Seq{{Tokens: []int{0}, Cache: cache, Adapter: o.Adapter}} // reused by every decode step
	smp := sample.New(o.Sampling)
	history := slices.Clone(promptIDs)
	stream := m.Tok.NewStreamDecoder(true)
	stream.Prime(promptIDs)  // the first new token decodes in context (e.g. keeps its leading space)
	var text strings.Builder // new text so far (from the stream decoder)
	emitted := 0             // bytes of text handed to OnText
	var turnIDs []int
	if o.Chat {
		te := m.TurnEnd()
		turnIDs = te.IDs
		if te.Text != "" {
			o.Stop = append(slices.Clip(o.Stop), te.Text)
		}
	}
	maxStop := 0
	for _, s := range o.Stop {
		maxStop = max(maxStop, len(s))
	}
	emit := func(final bool) error {
		if o.OnText == nil {
			return nil
		}
		upto := text.Len()
		if !final && maxStop > 0 { // hold back what could be the start of a stop string
			upto = max(emitted, upto-(maxStop-1))
			for upto > emitted && !utf8Start(text.String()[upto-1:]) {
				upto--
			}
		}
		if upto > emitted {
			if err := o.OnText(text.String()[emitted:upto]); err != nil {
				return err
			}
			emitted = upto
		}
		return nil
	}
	stopped := false
	for len(res.IDs) < limit {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		id := smp.Sample(logits[0][0], history)
		res.IDs = append(res.IDs, id)
		history = append(history, id)
		if !o.IgnoreEOS && slices.Contains(m.EOS, id) || slices.Contains(turnIDs, id) {
			res.FinishReason = "stop"
			break
		}
		prev := text.Len()
		text.WriteString(stream.Add(id))
		if maxStop > 0 {
			if cut, ok := findStop(text.String(), o.Stop, max(0, prev-maxStop+1)); ok {
				s := text.String()[:cut]
				text.Reset()
				text.WriteString(s)
				res.FinishReason, stopped = "stop", true
				break
			}
		}
		if err := emit(false); err != nil {
			return res, err
		}
		if len(res.IDs) == limit {
			break
		}
		step[0].Tokens[0] = id
		if logits, err = m.Net.Forward(step); err != nil {
			return res, err
		}
	}
	if !stopped {
		prev := text.Len()
		text.WriteString(stream.Flush())
		if maxStop > 0 {
			if cut, ok := findStop(text.String(), o.Stop, max(0, prev-maxStop+1)); ok {
				s := text.String()[:cut]
				text.Reset()
				text.WriteString(s)
				res.FinishReason, stopped = "stop", true
			}
		}
	}
	if err := emit(true); err != nil {
		return res, err
	}
	res.Text = text.String()
	if !stopped {
		// Exactly decode(prompt+new) minus decode(prompt), as the streamed text should be.
		res.Text = m.newText(promptIDs, res.IDs)
	}
	return res, nil
}

// TurnStop is how generation recognises the end of an assistant turn.
type TurnStop struct {
	IDs  []int  // a special token that ends the turn (e.g. <|im_end|>, <|eot_id|>, stories260K's <s>)
	Text string // or, when the marker holds no special token, the marker as a stop string
}

// TurnEnd is the chat template's end-of-turn marker ((*chat.Template).TurnEnd) as a stop condition: the first
// special token of the encoded marker (what follows it is formatting, e.g. a newline), or the marker text when it
// has none. stories260K's marker "\n<s>" stops at <s> (id 1), so the newline before it stays in the text.
func (m *Model) TurnEnd() TurnStop {
	marker := m.Chat.TurnEnd()
	if strings.TrimSpace(marker) == "" {
		return TurnStop{}
	}
	for _, id := range m.Tok.Encode(marker, false) {
		if m.Tok.IsSpecial(id) && id >= 0 && id < m.Config.VocabSize {
			return TurnStop{IDs: []int{id}}
		}
	}
	return TurnStop{Text: marker}
}

// newText is decode(prompt+ids) without the decode(prompt) prefix (or decode(ids) if that is not a prefix).
func (m *Model) newText(prompt, ids []int) string {
	full := m.Tok.Decode(append(slices.Clone(prompt), ids...), true)
	pre := m.Tok.Decode(prompt, true)
	if strings.HasPrefix(full, pre) {
		return full[len(pre):]
	}
	return m.Tok.Decode(ids, true)
}

// findStop returns the earliest position at or after from where a stop string occurs in s.
func findStop(s string, stops []string, from int) (int, bool) {
	best := -1
	for _, st := range stops {
		if st == "" {
			continue
		}
		if i := strings.Index(s[from:], st); i >= 0 && (best < 0 || from+i < best) {
			best = from + i
		}
	}
	return best, best >= 0
}

func utf8Start(s string) bool { return len(s) == 0 || s[0]&0xC0 != 0x80 }
