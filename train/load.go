package train

import (
	"errors"
	"fmt"

	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/chat"
	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/nn"
	"github.com/lorakit/lorakit/models/quant"
	"github.com/lorakit/lorakit/models/safetensors"
	"github.com/lorakit/lorakit/models/tokenizer"
	"github.com/lorakit/lorakit/train/data"
)

// Model is a base checkpoint folder loaded for training or evaluation.
type Model struct {
	Dir  string
	Ckpt *safetensors.Checkpoint
	Net  *llama.Model
	Tok  *tokenizer.Tokenizer
	Tpl  *chat.Template
	EOS  []int
}

// Close releases the checkpoint's memory maps.
func (m *Model) Close() error { return m.Ckpt.Close() }

// LoadModel loads an HF folder. With nf4 set every decoder linear layer is
// quantised to NF4 (block 64, double quantisation) as it loads, so the f32/bf16
// weights are never all resident at once.
func LoadModel(dir string, threads int, nf4 bool) (*Model, error) {
	cfg, err := llama.LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	ck, err := safetensors.OpenCheckpoint(dir)
	if err != nil {
		return nil, err
	}
	opts := llama.LoadOptions{Threads: threads}
	scratch := NewEnv(nil)
	// Weights saved quantised (bitsandbytes layout, e.g. by lorakit quantize) load as they are: a QLoRA
	// base, or a frozen 4-bit base for LoRA.
	opts.LoadLinear = func(ck *safetensors.Checkpoint, module string, out, in int) (nn.Linear, bool, error) {
		q, ok, err := quant.FromCheckpoint(ck, module+".weight")
		if err != nil || !ok {
			return nil, false, err
		}
		return &nn.Quantized{Q: q}, true, nil
	}
	if nf4 {
		opts.Quantize = func(module string, d *nn.Dense) (nn.Linear, error) {
			q, err := quant.Quantize4(quant.Type("nf4"), d.ToF32(), []int{d.Rows, d.Cols}, 64, true)
			if err != nil {
				return nil, err
			}
			return &nf4Linear{q: q, rows: d.Rows, cols: d.Cols, bias: d.Bias, scratch: scratch}, nil
		}
	}
	net, err := llama.Load(ck, cfg, opts)
	if err != nil {
		ck.Close()
		return nil, err
	}
	tok, err := tokenizer.Load(dir)
	if err != nil {
		ck.Close()
		return nil, err
	}
	tc := tok.Config()
	tpl, err := chat.New(tc.ChatTemplate, tc.BOSToken, tc.EOSToken)
	if err != nil {
		ck.Close()
		return nil, fmt.Errorf("%s: chat template: %w", dir, err)
	}
	m := &Model{Dir: dir, Ckpt: ck, Net: net, Tok: tok, Tpl: tpl, EOS: append([]int(nil), cfg.EOSTokenIDs...)}
	if gen, err := models.LoadGenerationConfig(dir); err == nil {
		m.EOS = append(m.EOS, gen.EOSTokenIDs...)
	}
	if id, ok := tok.EOS(); ok {
		m.EOS = append(m.EOS, id)
	}
	// The special tokens of the template's end-of-turn marker stop generation too
	// ("<|im_end|>", "<|eot_id|>", or "<s>" for templates that close a turn with it).
	if s := tpl.TurnEnd(); s != "" {
		for _, id := range tok.Encode(s, false) {
			if tok.IsSpecial(id) {
				m.EOS = append(m.EOS, id)
			}
		}
	}
	return m, nil
}

// nf4Linear is a frozen NF4 weight: each Forward expands it block by block into
// a transient f32 buffer (one layer at a time; the model stays 4-bit resident).
type nf4Linear struct {
	q          *quant.Weight
	rows, cols int
	bias       []float32
	scratch    *Env // shared by all layers of a model: one buffer per distinct shape, not per layer
}

func (l *nf4Linear) In() int  { return l.cols }
func (l *nf4Linear) Out() int { return l.rows }

func (l *nf4Linear) Forward(p *kernels.Pool, y, x []float32, m int) {
	if m == 1 { // a single row (generation): the fused dequantising GEMV reads 4-bit blocks directly
		l.q.MatVec(p, y, x)
		nn.AddBias(y, l.bias, m)
		return
	}
	w := l.scratch.get(l.rows * l.cols)
	l.q.DequantizeP(p, w)
	kernels.MatMulF32T(p, y, x, w, m, l.rows, l.cols)
	l.scratch.put(w)
	nn.AddBias(y, l.bias, m)
}

// Data is an encoded SFT data set.
type Data struct {
	Samples []Sample
	Stats   DataStats
}

// DataStats counts what happened to the lines of a data file.
type DataStats struct {
	Lines     int `json:"lines"`     // examples read (good lines)
	Bad       int `json:"bad"`       // lines skipped as malformed
	Truncated int `json:"truncated"` // examples cut at max-seq-len (kept)
	Dropped   int `json:"dropped"`   // examples with no response token left after truncation
	Kept      int `json:"kept"`
	Targets   int `json:"targets"` // loss tokens over the kept examples
	Tokens    int `json:"tokens"`
}

// LoadData reads and encodes a JSONL file. Bad lines fail with strict, else
// they are counted (onBad sees each one).
func LoadData(path string, m *Model, maxLen int, trainOnPrompt, strict bool, onBad func(error)) (*Data, error) {
	d := &Data{}
	err := data.ReadJSONL(path, strict, func(ex *data.Example, err error) error {
		if err != nil {
			if strict {
				return err
			}
			d.Stats.Bad++
			if onBad != nil {
				onBad(err)
			}
			return nil
		}
		d.Stats.Lines++
		enc, err := data.Encode(m.Tok, m.Tpl, ex, maxLen, trainOnPrompt)
		if errors.Is(err, data.ErrNoResponseTokens) {
			d.Stats.Dropped++
			if onBad != nil {
				onBad(fmt.Errorf("%s:%d: %w", path, ex.Line, err))
			}
			return nil
		}
		if err != nil {
			err = fmt.Errorf("%s:%d: %w", path, ex.Line, err)
			if strict {
				return err
			}
			d.Stats.Bad++
			if onBad != nil {
				onBad(err)
			}
			return nil
		}
		s := Sample{IDs: enc.IDs, Mask: enc.Mask}
		if s.Targets() == 0 {
			d.Stats.Dropped++
			return nil
		}
		if enc.Truncated {
			d.Stats.Truncated++
		}
		d.Stats.Kept++
		d.Stats.Targets += s.Targets()
		d.Stats.Tokens += len(s.IDs)
		d.Samples = append(d.Samples, s)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return d, nil
}
