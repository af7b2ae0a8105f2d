package train

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"

	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/llama"
)

// Forgetting, measured (--general-eval, eval --general): the perplexity of the base and of the trained model on
// text unrelated to the task. Fine-tuning on a narrow task raises it; how much is the price paid for the task,
// and the main reason to prefer a low-rank adapter over full fine-tuning.

// GeneralText is a general-text file encoded for perplexity: every token after the first is a target.
type GeneralText struct {
	Path    string
	Samples []Sample
	Tokens  int // targets over all samples
}

// LoadGeneralText reads path: plain text, one passage per line, or JSONL objects with a "text" field (a line that
// starts with '{' must be such an object). Each passage is tokenized as pre-training text (with BOS when the
// tokenizer adds it) and cut at maxLen tokens; blank lines are skipped.
func LoadGeneralText(path string, m *models.Model, maxLen int) (*GeneralText, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("general eval: %w", err)
	}
	defer f.Close()
	if m.Tok == nil {
		return nil, fmt.Errorf("general eval: the model has no tokenizer")
	}
	g := &GeneralText{Path: path}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for ln := 1; sc.Scan(); ln++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		text := line
		if strings.HasPrefix(line, "{") {
			var rec struct {
				Text *string `json:"text"`
			}
			if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.Text == nil {
				return nil, fmt.Errorf("general eval: %s:%d: a line starting with '{' must be a JSON object with a \"text\" string (plain text lines need no JSON)", path, ln)
			}
			text = *rec.Text
		}
		ids := m.Tok.Encode(text, true)
		if maxLen > 0 && len(ids) > maxLen {
			ids = ids[:maxLen]
		}
		if len(ids) < 2 {
			continue
		}
		mask := make([]bool, len(ids))
		for i := range mask[:len(ids)-1] {
			mask[i] = true
		}
		g.Samples = append(g.Samples, Sample{IDs: ids, Mask: mask})
		g.Tokens += len(ids) - 1
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("general eval: %s: %w", path, err)
	}
	if g.Tokens == 0 {
		return nil, fmt.Errorf("general eval: %s: no text (want plain text lines or JSONL with \"text\")", path)
	}
	return g, nil
}

// Perplexity is exp of the mean token loss of m (with delta, nil: the base) over the text, computed by the
// inference forward pass.
func (g *GeneralText) Perplexity(ctx context.Context, m *models.Model, delta llama.Delta) (float64, error) {
	var sum float64
	n := 0
	for _, s := range g.Samples {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		out, err := m.Net.Forward([]llama.Seq{{Tokens: s.IDs, AllLogits: true, Adapter: delta}})
		if err != nil {
			return 0, fmt.Errorf("general eval: %s: %w", g.Path, err)
		}
		for i, row := range out[0][:len(s.IDs)-1] {
			sum += tokenLoss(row, s.IDs[i+1])
			n++
		}
	}
	return math.Exp(sum / float64(max(n, 1))), nil
}

// perplexityNet is Perplexity of the network being trained (its training forward pass, no dropout), in batches
// of bs passages.
func (g *GeneralText) perplexityNet(net *Net, bs int) (float64, error) {
	var sum float64
	var n int
	for i := 0; i < len(g.Samples); i += bs {
		s, c, err := net.Loss(g.Samples[i:min(i+bs, len(g.Samples))])
		if err != nil {
			return 0, fmt.Errorf("general eval: %s: %w", g.Path, err)
		}
		sum += s
		n += c
	}
	return math.Exp(sum / float64(max(n, 1))), nil
}

// loadGeneral reads --general-eval and measures the base's perplexity on it before training.
func (r *trainRun) loadGeneral(ctx context.Context) error {
	if r.cfg.GeneralEval == "" {
		return nil
	}
	g, err := LoadGeneralText(r.cfg.GeneralEval, r.m, r.cfg.MaxSeqLen)
	if err != nil {
		return err
	}
	ppl, err := g.Perplexity(ctx, r.m, nil)
	if err != nil {
		return err
	}
	r.general, r.res.GeneralBasePPL = g, &ppl
	r.rep.Logf("general text %s: %d passages, %d tokens; base perplexity %.4g (measured again at every eval)", g.Path, len(g.Samples), g.Tokens, ppl)
	return nil
}

// evalGeneral adds the trained model's general perplexity (and the base's, for reference) to met.
func (r *trainRun) evalGeneral(met *Metrics) error {
	if r.general == nil {
		return nil
	}
	ppl, err := r.general.perplexityNet(r.net, r.cfg.BatchSize)
	if err != nil {
		return err
	}
	met.GeneralPPL, met.GeneralBasePPL = &ppl, r.res.GeneralBasePPL
	return nil
}

// writeGeneralSVG adds the general text's loss (log perplexity, on the loss axis) to the loss plot: the trained
// model's at each eval as green squares, the base's as a dashed green line.
func writeGeneralSVG(b *strings.Builder, h []Metrics, x func(int) float64, y func(float64) float64, pad float64) {
	var base *float64
	any := false
	for _, m := range h {
		if m.GeneralPPL != nil && *m.GeneralPPL > 0 {
			fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="6" height="6" fill="#2ca02c"/>`+"\n", x(m.Step)-3, y(math.Log(*m.GeneralPPL))-3)
			any = true
		}
		if m.GeneralBasePPL != nil && *m.GeneralBasePPL > 0 {
			base = m.GeneralBasePPL
		}
	}
	if base != nil {
		yb := y(math.Log(*base))
		fmt.Fprintf(b, `<line x1="%g" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#2ca02c" stroke-dasharray="4 3"/>`+"\n", pad, yb, x(h[len(h)-1].Step), yb)
	}
	if any || base != nil {
		fmt.Fprintf(b, `<text x="%g" y="20" fill="#2ca02c">■ general text loss (ln ppl; dashed: base)</text>`+"\n", pad+190)
	}
}

// evalGeneral fills res's general perplexities when c.General is set: the model with delta and without it.
func evalGeneral(ctx context.Context, m *models.Model, delta llama.Delta, c EvalConfig, res *EvalResult) error {
	if c.General == "" {
		return nil
	}
	maxLen := c.MaxSeqLen
	if maxLen <= 0 {
		maxLen = 4096
	}
	g, err := LoadGeneralText(c.General, m, maxLen)
	if err != nil {
		return err
	}
	base, err := g.Perplexity(ctx, m, nil)
	if err != nil {
		return err
	}
	res.GeneralBasePPL = &base
	if delta == nil {
		res.GeneralPPL = &base
		return nil
	}
	ppl, err := g.Perplexity(ctx, m, delta)
	if err != nil {
		return err
	}
	res.GeneralPPL = &ppl
	return nil
}
