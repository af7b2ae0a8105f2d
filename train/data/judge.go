package data

import (
	"fmt"
	"math"
	"strings"

	"github.com/lorakit/lorakit/models/chat"
	"github.com/lorakit/lorakit/models/llama"
)

// Judge is a model that data score runs over each example as its own reader: a sequence classifier (a reward
// model or a quality/topic classifier, see Classify) or, for embeddings, any model of the family (see
// Embedder). It reads the conversation with its own tokenizer and chat template.
type Judge struct {
	Net *llama.Model
	Tok Tokenizer
	// Tpl is the judge's chat template: the conversation is rendered with it (as apply_chat_template, no
	// generation prompt) when the judge ships one; nil or the default template: the plain text (see Read).
	Tpl *chat.Template
	// Reasoning includes assistant reasoning_content in what the judge reads (as the template renders it, else
	// folded into the content as a <think> block); without it the reasoning is left out.
	Reasoning bool
	// MaxSeqLen cuts longer readings at the end (0: no limit).
	MaxSeqLen int
}

// Read is the token sequence the judge reads for ex: a text line's document with the tokenizer's special tokens;
// a conversation rendered with the judge's chat template (tokenized without special tokens, as
// apply_chat_template(tokenize=True); with its tools, tool calls and tool results as training renders them),
// or, when it has none, the messages' contents joined by blank lines with the tokenizer's special tokens.
func (j *Judge) Read(ex *Example) ([]int, error) {
	var ids []int
	switch {
	case ex.Format == FormatText:
		ids = j.Tok.Encode(ex.Text, true)
	case j.Tpl == nil || j.Tpl.IsDefault():
		ids = j.Tok.Encode(plainText(j.messages(ex)), true)
	case ex.UsesTools(): // tools, tool calls and results rendered as training renders them
		tex := *ex
		if !j.Reasoning {
			tex.Messages = j.messages(ex)
		}
		text, _, err := RenderExample(j.Tpl, &tex)
		if err != nil {
			return nil, fmt.Errorf("template error: %w", err)
		}
		ids = j.Tok.Encode(text, false)
	default:
		text, err := j.Tpl.Render(j.messages(ex), false)
		if err != nil {
			return nil, fmt.Errorf("template error: %w", err)
		}
		ids = j.Tok.Encode(text, false)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("nothing to read: the example renders to no tokens")
	}
	if j.MaxSeqLen > 0 && len(ids) > j.MaxSeqLen {
		ids = ids[:j.MaxSeqLen]
	}
	return ids, nil
}

// messages is ex's conversation with reasoning kept (folded in when the template does not render it) or
// dropped.
func (j *Judge) messages(ex *Example) []chat.Message {
	msgs := append([]chat.Message(nil), ex.Messages...)
	for i := range msgs {
		if !j.Reasoning {
			msgs[i].ReasoningContent = ""
		} else if r := msgs[i].ReasoningContent; r != "" && (j.Tpl == nil || j.Tpl.IsDefault() || !j.Tpl.SupportsReasoning()) {
			msgs[i].Content = "<think>\n" + r + "\n</think>\n\n" + msgs[i].Content
			msgs[i].ReasoningContent = ""
		}
	}
	return msgs
}

// plainText is the conversation as a document: every message's content, blank-line separated.
func plainText(msgs []chat.Message) string {
	parts := make([]string, 0, len(msgs))
	for _, m := range msgs {
		parts = append(parts, m.Content)
	}
	return strings.Join(parts, "\n\n")
}

// Classify returns the judge's head outputs for each sequence as scores: the raw value for a single output
// (a reward) or problem_type "regression"; sigmoid per label for "multi_label_classification"; softmax over
// the labels otherwise (single_label_classification, or unset with several labels).
func (j *Judge) Classify(seqs [][]int) ([][]float64, error) {
	logits, err := j.Net.Classify(seqs)
	if err != nil {
		return nil, err
	}
	out := make([][]float64, len(logits))
	for i, l := range logits {
		out[i] = activate(j.Net.Config, l)
	}
	return out, nil
}

func activate(c *llama.Config, logits []float32) []float64 {
	v := make([]float64, len(logits))
	for i, x := range logits {
		v[i] = float64(x)
	}
	switch {
	case len(v) == 1 || c.ProblemType == "regression":
	case c.ProblemType == "multi_label_classification":
		for i, x := range v {
			v[i] = 1 / (1 + math.Exp(-x))
		}
	default:
		mx := math.Inf(-1)
		for _, x := range v {
			mx = math.Max(mx, x)
		}
		sum := 0.0
		for i, x := range v {
			v[i] = math.Exp(x - mx)
			sum += v[i]
		}
		for i := range v {
			v[i] /= sum
		}
	}
	return v
}

// Embedder turns each example into a vector: the judge model's final-norm hidden states (last_hidden_state) over
// what it reads, mean-pooled over every token ("mean") or taken at the last token that is not padding ("last",
// as a sequence classifier reads).
type Embedder struct {
	Judge
	Pool string // "mean" or "last"
}

// Dim is the embedding width (hidden_size).
func (e *Embedder) Dim() int { return e.Net.Config.HiddenSize }

// Embed returns one embedding per sequence.
func (e *Embedder) Embed(seqs [][]int) ([][]float32, error) {
	if e.Pool != "mean" && e.Pool != "last" {
		return nil, fmt.Errorf("pool %q: want mean or last", e.Pool)
	}
	batch := make([]llama.Seq, len(seqs))
	for i, s := range seqs {
		batch[i] = llama.Seq{Tokens: s, AllLogits: e.Pool == "mean"}
		if e.Pool == "last" && len(s) > 0 {
			batch[i].Tokens = s[:llama.ReadPosition(s, e.Net.Config.PadTokenID)+1]
		}
	}
	hs, err := e.Net.Hidden(batch)
	if err != nil {
		return nil, err
	}
	out := make([][]float32, len(seqs))
	for i, rows := range hs {
		if e.Pool == "last" {
			out[i] = rows[0]
			continue
		}
		v := make([]float32, e.Dim())
		for _, r := range rows {
			for j, x := range r {
				v[j] += x
			}
		}
		for j := range v {
			v[j] /= float32(len(rows))
		}
		out[i] = v
	}
	return out, nil
}

// EmbeddingsPath is where data score writes the embeddings of a scored file: beside it, .jsonl replaced by
// .emb.npy (a NumPy float32 array, one row per scored line in order; NaN for a bad line).
func EmbeddingsPath(scored string) string {
	return strings.TrimSuffix(scored, ".jsonl") + ".emb.npy"
}
