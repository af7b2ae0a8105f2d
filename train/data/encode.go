package data

import (
	"errors"
	"fmt"

	"github.com/lorakit/lorakit/models/chat"
)

// Tokenizer is what encoding needs from models/tokenizer (*tokenizer.Tokenizer satisfies it).
type Tokenizer interface {
	Encode(text string, addSpecial bool) []int
}

// Encoded is one example as model input.
type Encoded struct {
	IDs []int
	// Mask[i] is true when the loss includes predicting IDs[i+1] at position i (so the last entry is
	// always false). Without trainOnPrompt, exactly the assistant tokens are targets.
	Mask []bool
	// Truncated is set when the example was longer than maxLen and cut (at the end).
	Truncated bool
	// FullLen is the token count before truncation; ResponseTokens the number of assistant tokens in it
	// (reasoning, content and end-of-turn marker) and PromptTokens the rest.
	FullLen, PromptTokens, ResponseTokens int
}

// Targets returns the number of positions with Mask set.
func (e *Encoded) Targets() int {
	n := 0
	for _, m := range e.Mask {
		if m {
			n++
		}
	}
	return n
}

// ErrNoResponseTokens is returned (wrapped) by Encode when truncation to maxLen would leave no
// assistant token to learn from; callers count such examples and report them.
var ErrNoResponseTokens = errors.New("no response token survives truncation")

// ErrTooLong is returned (wrapped) by Tokenize-based checks when an example exceeds a length limit.
var ErrTooLong = errors.New("example longer than max sequence length")

// Encode renders ex with the chat template (a text-shape example: see TokenizeExample) (training form: reasoning kept, see
// chat.Template.RenderWithSpans; tools, tool calls and tool results as RenderExample renders them),
// tokenizes it without adding special tokens (the template writes BOS
// itself, as apply_chat_template(tokenize=True) does) and builds the loss mask. With maxLen > 0 a longer
// example is cut at the end and marked Truncated; if no assistant token is left the error wraps
// ErrNoResponseTokens.
func Encode(tok Tokenizer, tpl *chat.Template, ex *Example, maxLen int, trainOnPrompt bool) (*Encoded, error) {
	ids, assistant, err := TokenizeExample(tok, tpl, ex)
	if err != nil {
		return nil, fmt.Errorf("line %d: %w", ex.Line, err)
	}
	enc := &Encoded{IDs: ids, FullLen: len(ids)}
	for _, a := range assistant {
		if a {
			enc.ResponseTokens++
		}
	}
	enc.PromptTokens = len(ids) - enc.ResponseTokens
	if maxLen > 0 && len(ids) > maxLen {
		enc.IDs = ids[:maxLen:maxLen]
		assistant = assistant[:maxLen]
		enc.Truncated = true
	}
	n := len(enc.IDs)
	enc.Mask = make([]bool, n)
	kept := 0
	for i := 0; i+1 < n; i++ {
		if assistant[i+1] {
			kept++
		}
		enc.Mask[i] = trainOnPrompt || assistant[i+1]
	}
	if kept == 0 {
		if enc.Truncated {
			return nil, fmt.Errorf("line %d: %w (%d tokens, max %d, response starts at token %d)",
				ex.Line, ErrNoResponseTokens, enc.FullLen, maxLen, firstTrue(assistant, enc.FullLen))
		}
		return nil, fmt.Errorf("line %d: %w: the template produced no assistant tokens", ex.Line, ErrNoResponseTokens)
	}
	return enc, nil
}

func firstTrue(b []bool, def int) int {
	for i, v := range b {
		if v {
			return i
		}
	}
	return def
}

// TokenizeExample renders an example for training (its tools, tool calls and tool results too) and returns
// the token ids of the whole text and, per token, whether it belongs to assistant-generated text; assistant
// turns with "weight": 0 are not marked (see RenderExample). A text-shape example is not templated: it is
// TokenizeText's ids, every token marked (loss on all of them).
//
// Alignment: the whole rendered string is encoded once (so ids equal encoding the string in one go,
// what inference sees). To find which tokens fall in an assistant span [s, e), the prefixes text[:s] and
// text[:e] are encoded too: the tokens they share with the whole encoding lie before the boundary. A
// token that straddles a boundary (e.g. SentencePiece "▁Hello" whose space the template wrote before the
// content) counts as assistant text, because the model has to generate it.
func TokenizeExample(tok Tokenizer, tpl *chat.Template, ex *Example) ([]int, []bool, error) {
	if ex.Format == FormatText {
		ids := TokenizeText(tok, ex.Text)
		all := make([]bool, len(ids))
		for i := range all {
			all[i] = true
		}
		return ids, all, nil
	}
	text, spans, err := RenderExample(tpl, ex)
	if err != nil {
		return nil, nil, err
	}
	ids := tok.Encode(text, false)
	assistant := make([]bool, len(ids))
	for _, sp := range spans {
		if sp[1] <= sp[0] {
			continue
		}
		lo := 0
		if sp[0] > 0 {
			lo = commonPrefix(tok.Encode(text[:sp[0]], false), ids)
		}
		hi := len(ids)
		if sp[1] < len(text) {
			p := tok.Encode(text[:sp[1]], false)
			hi = commonPrefix(p, ids)
			if hi < len(p) && hi < len(ids) {
				hi++ // the token straddling the end boundary carries assistant text
			}
		}
		for i := lo; i < hi; i++ {
			assistant[i] = true
		}
	}
	return ids, assistant, nil
}

// eosTokenizer is implemented by *tokenizer.Tokenizer.
type eosTokenizer interface {
	EOS() (int, bool)
}

// TokenizeText encodes a text-shape document as continued pre-training does (TRL's and mlx-lm's
// language-modelling datasets): with the tokenizer's special tokens (BOS where it adds one), and EOS
// appended unless it already ends the encoding, so the model learns where a document stops.
func TokenizeText(tok Tokenizer, text string) []int {
	ids := tok.Encode(text, true)
	if et, ok := tok.(eosTokenizer); ok {
		if eos, ok := et.EOS(); ok && (len(ids) == 0 || ids[len(ids)-1] != eos) {
			ids = append(ids, eos)
		}
	}
	return ids
}

func commonPrefix(a, b []int) int {
	n := min(len(a), len(b))
	i := 0
	for i < n && a[i] == b[i] {
		i++
	}
	return i
}
