package train

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/nn"
)

// Untrained special tokens. A base model can carry special tokens it never saw in pre-training: Llama-3 base's
// <|eot_id|> (its rows are zero) or stories260K's </s> (trained without it, its tied row drifted with every other
// unseen token to one shared direction). A chat template that ends turns with such a token asks the model to
// predict a token whose head row carries no signal and to read an embedding that means nothing; LoRA on the
// linear layers alone learns this slowly or not at all. Unsloth resets such rows to the mean embedding; PEFT
// trains them (trainable_token_indices), which is what --train-tokens does.
//
// A row is reported as untrained when, against the rest of its table:
//
//   - zero: its norm is below zeroRatio × the median row norm (rows left at a zero init; Unsloth tests max ≤ 1e-16,
//     the relative form also catches rows that weight decay shrank towards zero);
//   - collapsed: its cosine with at least one other row is ≥ collapseCos. Rows that only ever received the same
//     "push down" gradient of the softmax converge to one direction (stories260K: 238 rows at cosine 1.000000 with
//     each other, while every trained token's nearest other row is at cosine < 0.5); trained tokens are never this
//     close (Unsloth's second test looks for LM-head rows that are equal to 3 decimals, the same idea);
//   - mean: its cosine with the mean row is ≥ collapseCos and its norm within 5% of the mean's (rows initialised
//     to the mean embedding, transformers' resize_token_embeddings default, and Unsloth's fix).
const (
	zeroRatio   = 1e-3
	collapseCos = 0.999
)

// UntrainedToken is a special token whose embedding (or LM-head) row looks untrained.
type UntrainedToken struct {
	ID    int    `json:"id"`
	Token string `json:"token"`
	Use   string `json:"use"`   // why it matters: "EOS", "in the chat template", or both
	Table string `json:"table"` // "embed_tokens" or "lm_head"
	Test  string `json:"test"`  // which test flagged it, with its numbers
	// InData is set when the encoded training examples contain it (the chat template writes it): only then does
	// training depend on it, and only then does --train-tokens auto train it.
	InData bool `json:"in_data"`
}

func (u UntrainedToken) String() string {
	return fmt.Sprintf("%q (id %d, %s): its %s row %s", u.Token, u.ID, u.Use, u.Table, u.Test)
}

// candidateTokens are the special tokens training depends on: EOS (generation stops on it) and every special
// token of the encoded training examples (the chat template's markers), with what each is used for.
func candidateTokens(m *models.Model, samples []Sample) map[int]string {
	use := map[int][]string{}
	for _, id := range m.EOS {
		use[id] = append(use[id], "EOS")
	}
	seen := map[int]bool{}
	for _, s := range samples {
		for _, id := range s.IDs {
			if !seen[id] && m.Tok != nil && m.Tok.IsSpecial(id) {
				seen[id] = true
				use[id] = append(use[id], "in the chat template")
			}
		}
	}
	out := map[int]string{}
	for id, u := range use {
		out[id] = strings.Join(u, ", ")
	}
	return out
}

// FindUntrainedTokens checks the candidate tokens' rows in the embedding table and, when untied and dense, the
// LM head.
func FindUntrainedTokens(m *models.Model, samples []Sample) []UntrainedToken {
	cands := candidateTokens(m, samples)
	ids := make([]int, 0, len(cands))
	for id := range cands {
		if id >= 0 && id < m.Net.Config.VocabSize {
			ids = append(ids, id)
		}
	}
	sort.Ints(ids)
	if len(ids) == 0 {
		return nil
	}
	tables := []struct {
		name string
		d    nn.Table
	}{{"embed_tokens", m.Net.EmbedTokens}}
	if h, ok := m.Net.LMHead.(*nn.Dense); ok && !m.Net.Config.TieWordEmbeddings && h != m.Net.EmbedTokens {
		tables = append(tables, struct {
			name string
			d    nn.Table
		}{"lm_head", h})
	}
	var out []UntrainedToken
	flagged := map[int]bool{}
	for _, tb := range tables {
		for i, test := range rowTests(tb.d, ids) {
			if test == "" || flagged[ids[i]] {
				continue
			}
			flagged[ids[i]] = true
			tok := strconv.Itoa(ids[i])
			if m.Tok != nil {
				tok = m.Tok.Token(ids[i])
			}
			u := cands[ids[i]]
			out = append(out, UntrainedToken{ID: ids[i], Token: tok, Use: u, Table: tb.name, Test: test, InData: strings.Contains(u, "chat template")})
		}
	}
	return out
}

// rowTests runs the three tests on the rows ids of table w [V, H] in one pass over the table, returning for
// each id the failed test described, or "".
func rowTests(w nn.Table, ids []int) []string {
	V, H := w.Out(), w.In()
	rows := make([]float32, len(ids)*H)
	norms := make([]float64, len(ids))
	for k, id := range ids {
		r := rows[k*H : (k+1)*H]
		w.Row(id, r)
		norms[k] = math.Sqrt(float64(kernels.Dot(r, r)))
	}
	all := make([]float64, V)
	mean := make([]float64, H)
	close := make([]int, len(ids)) // rows at cosine ≥ collapseCos
	bestCos := make([]float64, len(ids))
	buf := make([]float32, H)
	for v := 0; v < V; v++ {
		w.Row(v, buf)
		n := math.Sqrt(float64(kernels.Dot(buf, buf)))
		all[v] = n
		for j, x := range buf {
			mean[j] += float64(x)
		}
		for k, id := range ids {
			if v == id || n == 0 || norms[k] == 0 {
				continue
			}
			c := float64(kernels.Dot(buf, rows[k*H:(k+1)*H])) / (n * norms[k])
			bestCos[k] = max(bestCos[k], c)
			if c >= collapseCos {
				close[k]++
			}
		}
	}
	var mn float64
	for j := range mean {
		mean[j] /= float64(V)
		mn += mean[j] * mean[j]
	}
	mn = math.Sqrt(mn)
	med := slices.Clone(all)
	slices.Sort(med)
	median := med[V/2]
	out := make([]string, len(ids))
	for k := range ids {
		r := rows[k*H : (k+1)*H]
		var dm float64
		for j, x := range r {
			dm += float64(x) * mean[j]
		}
		cm := 0.0
		if norms[k] > 0 && mn > 0 {
			cm = dm / (norms[k] * mn)
		}
		switch {
		case norms[k] <= zeroRatio*median:
			out[k] = fmt.Sprintf("is near zero (norm %.3g, median row norm %.3g)", norms[k], median)
		case close[k] > 0:
			out[k] = fmt.Sprintf("points the same way as %d other rows (cosine ≥ %g, best %.6f: rows the base never trained collapse together; trained tokens here are far apart)", close[k], collapseCos, bestCos[k])
		case cm >= collapseCos && math.Abs(norms[k]/mn-1) < 0.05:
			out[k] = fmt.Sprintf("is the mean embedding (cosine %.6f, norm %.3g vs %.3g)", cm, norms[k], mn)
		}
	}
	return out
}

// ParseTrainTokens resolves --train-tokens: "auto" (the untrained ones found in the training data), or a comma-separated list of token
// strings or ids.
func ParseTrainTokens(spec string, m *models.Model, found []UntrainedToken) ([]int, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return nil, nil
	}
	if spec == "auto" {
		var ids []int
		for _, u := range found {
			if u.InData {
				ids = append(ids, u.ID)
			}
		}
		return ids, nil
	}
	var ids []int
	for _, f := range strings.Split(spec, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if m.Tok != nil {
			if id, ok := m.Tok.TokenID(f); ok {
				ids = append(ids, id)
				continue
			}
		}
		id, err := strconv.Atoi(f)
		if err != nil || id < 0 || id >= m.Net.Config.VocabSize {
			return nil, fmt.Errorf("train-tokens: %q is neither a token of the tokenizer nor a token id in [0, %d) (give tokens as the tokenizer spells them, e.g. '<|eot_id|>,</s>', or auto)", f, m.Net.Config.VocabSize)
		}
		ids = append(ids, id)
	}
	return ids, nil
}
