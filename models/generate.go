package models

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/sample"
	"github.com/lorakit/lorakit/models/stop"
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
	var buf llama.Logits // each step's logits are sampled before the next step overwrites them
	logits, err := m.Net.ForwardInto(&buf, []llama.Seq{{Tokens: promptIDs, Cache: cache, Adapter: o.Adapter}})
	if err != nil {
		return nil, err
	}
	step := []llama.Seq{{Tokens: []int{0}, Cache: cache, Adapter: o.Adapter}} // reused by every decode step
	smp := sample.New(o.Sampling)
	history := slices.Clone(promptIDs)
	stream := m.Tok.NewStreamDecoder(true)
	stream.Prime(promptIDs) // the first new token decodes in context (e.g. keeps its leading space)
	rule := stop.Rule{EOS: m.EOS, IgnoreEOS: o.IgnoreEOS, Strings: o.Stop, MaxTokens: limit}
	if o.Chat {
		rule.TurnEnd = m.TurnEnd()
	}
	seq := rule.Start()
	var text strings.Builder // new text handed out so far
	for {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		id := smp.Sample(logits[0][0], history)
		res.IDs = append(res.IDs, id)
		history = append(history, id)
		piece, reason := seq.Next(id, stream)
		text.WriteString(piece)
		if piece != "" && o.OnText != nil {
			if err := o.OnText(piece); err != nil {
				return res, err
			}
		}
		if reason != "" {
			res.FinishReason = reason
			break
		}
		step[0].Tokens[0] = id
		if logits, err = m.Net.ForwardInto(&buf, step); err != nil {
			return res, err
		}
	}
	res.Text = text.String()
	if !seq.Cut() {
		// Exactly decode(prompt+new) minus decode(prompt), as the streamed text should be.
		res.Text = m.newText(promptIDs, res.IDs)
	}
	return res, nil
}

// TurnEnd is the chat template's end-of-turn marker ((*chat.Template).TurnEnd) as a stop condition: the first
// special token of the encoded marker (what follows it is formatting, e.g. a newline), or the marker text when it
// has none. stories260K's marker "\n<s>" stops at <s> (id 1), so the newline before it stays in the text.
func (m *Model) TurnEnd() stop.Turn {
	marker := m.Chat.TurnEnd()
	if strings.TrimSpace(marker) == "" {
		return stop.Turn{}
	}
	for _, id := range m.Tok.Encode(marker, false) {
		if m.Tok.IsSpecial(id) && id >= 0 && id < m.Config.VocabSize {
			return stop.Turn{IDs: []int{id}}
		}
	}
	return stop.Turn{Text: marker}
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
