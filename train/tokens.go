package train

import (
	"fmt"
	"slices"

	"github.com/nlpodyssey/spago/mat"
	spnn "github.com/nlpodyssey/spago/nn"

	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/nn"
)

// Trainable tokens (--train-tokens): beside the LoRA pairs, a few rows of the embedding table are trained whole,
// as PEFT's trainable_token_indices does, so that special tokens the base never learnt get a usable embedding
// and, through the LM head, can be predicted. With a tied head the same rows serve both; an untied head gets its
// own rows for the same ids.

// tokenParams are the trained rows of a Net.
type tokenParams struct {
	ids        []int
	embed      *spnn.Param // [n, H], initialised from the embedding rows
	head       *spnn.Param // [n, H]: embed itself with a tied head, else initialised from the LM head rows
	headBase   []float32   // the LM head's own rows [n, H] (the loss corrects the frozen head's products by them)
	embedIndex map[int]int // token id → row of embed
}

// SetTrainTokens makes the rows of ids trainable (LoRA and QLoRA only: full fine-tuning trains every row).
func (n *Net) SetTrainTokens(ids []int) error {
	if n.Method == Full {
		return fmt.Errorf("train-tokens: full fine-tuning already trains every embedding row")
	}
	if n.tok != nil {
		return fmt.Errorf("train-tokens: already set")
	}
	if len(ids) == 0 {
		return nil
	}
	c := n.Config
	H, V := c.HiddenSize, c.VocabSize
	ids = slices.Clone(ids)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	tp := &tokenParams{ids: ids, embedIndex: map[int]int{}}
	e := make([]float32, len(ids)*H)
	for k, id := range ids {
		if id < 0 || id >= V {
			return fmt.Errorf("train-tokens: token id %d is outside the vocabulary [0, %d)", id, V)
		}
		n.Base.EmbedTokens.Row(id, e[k*H:(k+1)*H])
		tp.embedIndex[id] = k
	}
	tp.embed = n.addParam(lora.TokensKey(lora.EmbedModule), spnn.NewParam(newMat(len(ids), H, e)), false)
	tp.headBase = make([]float32, len(ids)*H)
	if d, ok := n.Base.LMHead.(*nn.Dense); ok { // the rows alone, not the whole [V, H] head in f32
		for k, id := range ids {
			d.Row(id, tp.headBase[k*H:(k+1)*H])
		}
	} else {
		w, release := n.Env.baseWeight(n.Base.LMHead)
		for k, id := range ids {
			copy(tp.headBase[k*H:(k+1)*H], w[id*H:(id+1)*H])
		}
		release()
	}
	if c.TieWordEmbeddings {
		tp.head = tp.embed
	} else {
		tp.head = n.addParam(lora.TokensKey(lora.HeadModule), spnn.NewParam(newMat(len(ids), H, slices.Clone(tp.headBase))), false)
	}
	n.tok = tp
	n.AdCfg.TrainableTokens = lora.NewTokenIndices(ids, !c.TieWordEmbeddings)
	return nil
}

// TrainTokens lists the token ids whose rows are trained (nil: none).
func (n *Net) TrainTokens() []int {
	if n.tok == nil {
		return nil
	}
	return slices.Clone(n.tok.ids)
}

// tokenAdapter adds the trained rows to a (Net.Adapter).
func (n *Net) tokenAdapter(a *lora.Adapter) {
	if n.tok == nil {
		return
	}
	H := n.Config.HiddenSize
	a.Tokens = map[string]*lora.TokenRows{
		lora.EmbedModule: {IDs: slices.Clone(n.tok.ids), Values: slices.Clone(vals(n.tok.embed)), Dim: H}}
	if n.tok.head != n.tok.embed {
		a.Tokens[lora.HeadModule] = &lora.TokenRows{IDs: slices.Clone(n.tok.ids), Values: slices.Clone(vals(n.tok.head)), Dim: H}
	}
	a.TiedHead = n.Config.TieWordEmbeddings
}

// setTokenAdapter loads a's trained rows (--init-adapter); their ids must be the training's.
func (n *Net) setTokenAdapter(a *lora.Adapter) error {
	if n.tok == nil {
		if len(a.Tokens) > 0 {
			return fmt.Errorf("the adapter trains token rows (trainable_token_indices); train with --train-tokens for the same tokens")
		}
		return nil
	}
	for m, p := range map[string]*spnn.Param{lora.EmbedModule: n.tok.embed, lora.HeadModule: n.tok.head} {
		if m == lora.HeadModule && p == n.tok.embed {
			continue
		}
		t := a.Tokens[m]
		if t == nil || !slices.Equal(t.IDs, n.tok.ids) {
			return fmt.Errorf("the adapter's trained rows of %s are not those of tokens %v", m, n.tok.ids)
		}
		copy(vals(p), t.Values)
	}
	return nil
}

// tokenEmbedFn replaces, in the looked-up embeddings x [T, H] of ids, the rows of the trained tokens by their
// parameters; the gradient of each replaced row goes to its parameter row.
type tokenEmbedFn struct {
	x   []float32
	ids []int
	tp  *tokenParams
	d   int
}

// TokenEmbed returns x with the rows of trained tokens replaced (x is reused as the output).
func (e *Env) TokenEmbed(x []float32, ids []int, tp *tokenParams, d int) mat.Tensor {
	return run(&tokenEmbedFn{x: x, ids: ids, tp: tp, d: d})
}

func (f *tokenEmbedFn) Operands() []mat.Tensor { return []mat.Tensor{f.tp.embed} }

func (f *tokenEmbedFn) Forward() (mat.Tensor, error) {
	w, d := vals(f.tp.embed), f.d
	for i, id := range f.ids {
		if k, ok := f.tp.embedIndex[id]; ok {
			copy(f.x[i*d:(i+1)*d], w[k*d:(k+1)*d])
		}
	}
	return newMat(len(f.ids), d, f.x), nil
}

func (f *tokenEmbedFn) Backward(gy mat.Tensor) error {
	g, d := vals(gy), f.d
	dw := make([]float32, len(f.tp.ids)*d)
	for i, id := range f.ids {
		if k, ok := f.tp.embedIndex[id]; ok {
			kernels.Axpy(1, g[i*d:(i+1)*d], dw[k*d:(k+1)*d])
		}
	}
	accGrad(f.tp.embed, len(f.tp.ids), d, dw)
	return nil
}

// tokenLogits overwrites the logits z [n, v] of the trained tokens with hs [n, d] times their head rows.
func (tp *tokenParams) tokenLogits(hs, z []float32, n, d, v int) {
	w := vals(tp.head)
	for i := 0; i < n; i++ {
		h := hs[i*d : (i+1)*d]
		for k, id := range tp.ids {
			z[i*v+id] = kernels.Dot(h, w[k*d:(k+1)*d])
		}
	}
}

// tokenGrads is the trained head rows' share of the loss's backward pass, given dlogits [n, v] (scaled by gs):
// the head rows get gs·Σᵢ dlogits[i, id]·hsᵢ, and dhs [n, d], computed through the frozen head's own rows, is
// corrected by gs·dlogits[i, id]·(row − frozen row).
func (tp *tokenParams) tokenGrads(hs, dlogits, dhs []float32, gs float32, n, d, v int) []float32 {
	w := vals(tp.head)
	dw := make([]float32, len(tp.ids)*d)
	for i := 0; i < n; i++ {
		h := hs[i*d : (i+1)*d]
		for k, id := range tp.ids {
			g := gs * dlogits[i*v+id]
			if g == 0 {
				continue
			}
			kernels.Axpy(g, h, dw[k*d:(k+1)*d])
			if dhs != nil {
				row, base := w[k*d:(k+1)*d], tp.headBase[k*d:(k+1)*d]
				di := dhs[i*d : (i+1)*d]
				for j := range di {
					di[j] += g * (row[j] - base[j])
				}
			}
		}
	}
	return dw
}

// trainTokens checks the special tokens training depends on for untrained rows (LoRA and QLoRA: full fine-tuning
// trains every row), warns about them unless --train-tokens trains them, and makes the rows --train-tokens
// names trainable.
func (r *trainRun) trainTokens() error {
	if r.net.Method == Full {
		return nil
	}
	found := FindUntrainedTokens(r.m, r.samples)
	r.res.UntrainedTokens = found
	ids, err := ParseTrainTokens(r.cfg.TrainTokens, r.m, found)
	if err != nil {
		return err
	}
	for _, u := range found {
		if !u.InData && !slices.Contains(ids, u.ID) {
			r.rep.Logf("note: special token %s. The training data never uses it (the chat template ends turns otherwise), so training does not depend on it "+
				"and --train-tokens auto leaves it; plain completions that should stop at it may not.", u)
			continue
		}
		if slices.Contains(ids, u.ID) {
			r.rep.Logf("untrained special token %s: training its row (--train-tokens)", u)
			continue
		}
		r.rep.Logf("warning: special token %s. Its row looks untrained, so LoRA alone can hardly teach the model to read or produce it "+
			"(a turn that should end in it may never stop). Train its row beside LoRA with --train-tokens auto (or --train-tokens '%s'), "+
			"saved in the adapter as PEFT's trainable_token_indices.", u, u.Token)
	}
	if r.cfg.TrainTokens == "auto" && len(found) == 0 {
		r.rep.Logf("train-tokens auto: no untrained special token found; no rows trained")
	}
	if err := r.net.SetTrainTokens(ids); err != nil {
		return err
	}
	r.res.TrainedTokens = r.net.TrainTokens()
	return nil
}
