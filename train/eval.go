package train

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/train/data"
)

// EvalConfig configures Evaluate.
type EvalConfig struct {
	Model, Adapter, Data string
	MaxSeqLen            int // 0: 4096
	MaxNewTokens         int // generation budget for exact match (0: reference length + 32)
	Threads              int
	Strict               bool
	NoGenerate           bool // skip exact match
	// General is text unrelated to the task (plain lines or JSONL with "text"): the perplexity of the model with
	// and without the adapter on it (forgetting, measured). Data may then be empty.
	General string
	// Quant "nf4" holds the base's linear weights in NF4 (block 64, double quantisation), as QLoRA
	// training does: a QLoRA adapter is scored against the base it was trained on. "" keeps the dtype; "auto"
	// picks nf4 when the adapter's training_args.json says it was trained with --method qlora.
	Quant string
}

// EvalResult is what `lorakit eval` prints.
type EvalResult struct {
	Loss       float64 `json:"loss"`        // mean token loss over response tokens
	PPL        float64 `json:"ppl"`         // exp(loss)
	ExactMatch float64 `json:"exact_match"` // fraction of examples whose greedy answer equals the reference (text lines left out)
	N          int     `json:"n"`           // examples evaluated
	Tokens     int     `json:"tokens"`      // response tokens scored
	Bad        int     `json:"bad_lines"`
	// GeneralPPL is the perplexity on the --general text with the adapter, GeneralBasePPL without it.
	GeneralPPL     *float64 `json:"general_ppl,omitempty"`
	GeneralBasePPL *float64 `json:"general_base_ppl,omitempty"`
}

// Evaluate scores a data file with a model and optional adapter: the mean
// cross-entropy over the response tokens (as trained), and exact match of the
// greedy answer to the last assistant message (whitespace-trimmed; a leading
// <think>…</think> block is ignored unless the reference has one).
func Evaluate(ctx context.Context, c EvalConfig) (*EvalResult, error) {
	if c.Quant == "auto" {
		c.Quant = qloraQuant(c.Adapter)
	}
	switch c.Quant {
	case "", "none", "nf4":
	default:
		return nil, fmt.Errorf("eval: quant %q: want nf4 or empty", c.Quant)
	}
	m, err := models.Load(c.Model, BaseOptions(c.Threads, c.Quant == "nf4"))
	if err != nil {
		return nil, err
	}
	defer m.Close()
	var delta llama.Delta
	if c.Adapter != "" {
		ad, err := lora.LoadUnmerged(c.Adapter, models.AdapterBase(m.Net, m.Dir))
		if err != nil {
			return nil, fmt.Errorf("eval: %w", err)
		}
		delta = ad
	}
	return EvaluateModel(ctx, m, delta, c)
}

// qloraQuant is "nf4" when adapter was written by a QLoRA run (its training_args.json), else "".
func qloraQuant(adapter string) string {
	if adapter == "" {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(adapter, "training_args.json"))
	if err != nil {
		return ""
	}
	var args struct {
		Method string `json:"method"`
	}
	if json.Unmarshal(b, &args) == nil && args.Method == string(QLoRA) {
		return "nf4"
	}
	return ""
}

// EvaluateModel is Evaluate over an already loaded model and adapter (nil: base).
func EvaluateModel(ctx context.Context, m *models.Model, delta llama.Delta, c EvalConfig) (*EvalResult, error) {
	maxLen := c.MaxSeqLen
	if maxLen <= 0 {
		maxLen = 4096
	}
	res := &EvalResult{}
	if err := evalGeneral(ctx, m, delta, c, res); err != nil {
		return nil, err
	}
	if c.Data == "" {
		return res, nil
	}
	var lossSum float64
	var exact, matchable int // text-shape lines have no answer to match
	err := data.ReadJSONL(c.Data, c.Strict, func(ex *data.Example, err error) error {
		if err != nil {
			res.Bad++
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		enc, err := data.Encode(m.Tok, m.Chat, ex, maxLen, false)
		if err != nil {
			if errors.Is(err, data.ErrNoResponseTokens) {
				res.Bad++
				return nil
			}
			return err
		}
		s := Sample{IDs: enc.IDs, Mask: enc.Mask}
		if s.Targets() == 0 {
			res.Bad++
			return nil
		}
		out, err := m.Net.Forward([]llama.Seq{{Tokens: enc.IDs, AllLogits: true, Adapter: delta}})
		if err != nil {
			return fmt.Errorf("%s:%d: %w", c.Data, ex.Line, err)
		}
		for i, row := range out[0] {
			if i+1 < len(enc.IDs) && enc.Mask[i] {
				lossSum += tokenLoss(row, enc.IDs[i+1])
				res.Tokens++
			}
		}
		res.N++
		if !c.NoGenerate && ex.Format != data.FormatText {
			matchable++
			ok, err := exactMatch(ctx, m, delta, ex, c.MaxNewTokens)
			if err != nil {
				return fmt.Errorf("%s:%d: %w", c.Data, ex.Line, err)
			}
			if ok {
				exact++
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if res.Tokens > 0 {
		res.Loss = lossSum / float64(res.Tokens)
		res.PPL = math.Exp(res.Loss)
	}
	if matchable > 0 {
		res.ExactMatch = float64(exact) / float64(matchable)
	}
	return res, nil
}

// tokenLoss is the cross-entropy −log softmax(z)[t].
func tokenLoss(z []float32, t int) float64 { return kernels.LogSumExp(z) - float64(z[t]) }

func exactMatch(ctx context.Context, m *models.Model, delta llama.Delta, ex *data.Example, maxNew int) (bool, error) {
	msgs := ex.Messages
	last := len(msgs) - 1
	if last < 0 || msgs[last].Role != "assistant" {
		return false, nil
	}
	ref := strings.TrimSpace(msgs[last].Content)
	var prompt string
	if ex.UsesTools() {
		// the reference is the rendered turn (tool calls included), the prompt the training text before it
		p, r, ok, err := data.LastTurn(m.Chat, ex)
		if err != nil || !ok {
			return false, err
		}
		prompt, ref = p, strings.TrimSpace(r)
	} else {
		var err error
		if prompt, err = m.Chat.Render(msgs[:last], true); err != nil {
			return false, err
		}
	}
	ids := m.Tok.Encode(prompt, false)
	if maxNew <= 0 {
		maxNew = len(m.Tok.Encode(msgs[last].ReasoningContent+msgs[last].Content, false)) + 32
		if ex.UsesTools() {
			maxNew = len(m.Tok.Encode(ref, false)) + 32
		}
	}
	// greedy, stopping where generate --chat and serve stop (EOS ids, the template's end of turn)
	gen, err := m.Generate(ctx, ids, models.GenerateOptions{MaxTokens: maxNew, Adapter: delta, Chat: true})
	if err != nil {
		return false, err
	}
	text := strings.TrimSpace(gen.Text)
	if !strings.HasPrefix(ref, "<think>") {
		if i := strings.Index(text, "</think>"); i >= 0 && strings.HasPrefix(text, "<think>") {
			text = strings.TrimSpace(text[i+len("</think>"):])
		}
	}
	return text == ref, nil
}
