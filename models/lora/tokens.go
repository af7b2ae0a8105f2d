package lora

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/safetensors"
)

// Trainable tokens (PEFT's trainable_token_indices, the TrainableTokensLayer beside LoRA): a few rows of the
// embedding table (and of an untied LM head) are trained and saved whole, so that special tokens the base never
// learnt (Llama-3 base's <|eot_id|>, stories260K's </s>) can be learnt without training the whole table.
//
// On disk, as PEFT saves them:
//
//   - adapter_config.json "trainable_token_indices": a list of ids (the input embedding) or an object from module
//     name to ids ({"embed_tokens": [...], "lm_head": [...]}), the module matched by its name's end;
//   - adapter_model.safetensors "base_model.model.<module>.token_adapter.trainable_tokens_delta" [len(ids), dim]:
//     despite the name, the rows' new values (PEFT's merge is index_copy, not an addition), in the order of ids.
//
// A tied LM head follows the embedding's rows (PEFT ties a second TrainableTokensLayer to the embedding's and
// saves nothing for it).

// Module names of the two tables trainable tokens can change.
const (
	EmbedModule = "model.embed_tokens"
	HeadModule  = "lm_head"
)

// tokensSuffix ends the saved key of a module's trainable rows.
const tokensSuffix = ".token_adapter.trainable_tokens_delta"

// TokenRows are the trained rows of one table: Values [len(IDs), Dim], row k replacing row IDs[k].
type TokenRows struct {
	IDs    []int
	Values []float32
	Dim    int
}

// Row returns the new value of token id, or nil when these rows do not change it.
func (t *TokenRows) Row(id int) []float32 {
	if t == nil {
		return nil
	}
	for k, x := range t.IDs {
		if x == id {
			return t.Values[k*t.Dim : (k+1)*t.Dim]
		}
	}
	return nil
}

// CopyInto writes the rows into the [vocab, Dim] table w (PEFT's merge: index_copy along the rows).
func (t *TokenRows) CopyInto(w []float32) error {
	if t.Dim == 0 || len(w)%t.Dim != 0 {
		return fmt.Errorf("trainable tokens: a table of %d values does not have rows of %d", len(w), t.Dim)
	}
	vocab := len(w) / t.Dim
	for k, id := range t.IDs {
		if id < 0 || id >= vocab {
			return fmt.Errorf("trainable tokens: token id %d outside the vocabulary [0, %d)", id, vocab)
		}
		copy(w[id*t.Dim:(id+1)*t.Dim], t.Values[k*t.Dim:(k+1)*t.Dim])
	}
	return nil
}

// headLogits overwrites, in each of rows rows of logits y [rows, vocab], the logit of every replaced token by the
// product of the hidden state x [rows, Dim] with its new row: what the head computes once the row is replaced.
func (t *TokenRows) headLogits(y, x []float32, rows, vocab int) {
	for r := 0; r < rows; r++ {
		h := x[r*t.Dim : (r+1)*t.Dim]
		for k, id := range t.IDs {
			y[r*vocab+id] = kernels.Dot(h, t.Values[k*t.Dim:(k+1)*t.Dim])
		}
	}
}

// TokenIndices is adapter_config.json's trainable_token_indices: the ids per module-name key. List is set when
// the file gave a plain list (it then targets the input embedding and is written back as a list).
type TokenIndices struct {
	ByKey map[string][]int
	List  bool
}

// parseTokenIndices decodes PEFT's Optional[Union[list[int], dict[str, list[int]]]].
func parseTokenIndices(v json.RawMessage) (*TokenIndices, error) {
	var l []int
	if json.Unmarshal(v, &l) == nil {
		return &TokenIndices{ByKey: map[string][]int{"embed_tokens": l}, List: true}, nil
	}
	var m map[string][]int
	if err := json.Unmarshal(v, &m); err != nil {
		return nil, fmt.Errorf("want a list of token ids or an object of lists: %w", err)
	}
	return &TokenIndices{ByKey: m}, nil
}

func (ti *TokenIndices) marshal() any {
	if ti.List && len(ti.ByKey) == 1 {
		for _, v := range ti.ByKey {
			return v
		}
	}
	return ti.ByKey
}

// For returns the ids the config gives module ("model.embed_tokens", "lm_head"): the key its name ends with.
func (ti *TokenIndices) For(module string) ([]int, bool) {
	if ti == nil {
		return nil, false
	}
	for _, k := range slices.Sorted(maps.Keys(ti.ByKey)) {
		if module == k || strings.HasSuffix(module, "."+k) {
			return ti.ByKey[k], true
		}
	}
	return nil, false
}

// NewTokenIndices is the config of trainable rows for ids: the list form (input embedding, and a tied head with
// it) when head is false, else the same ids for embed_tokens and lm_head (an untied head, which PEFT's list form
// would leave untrained).
func NewTokenIndices(ids []int, head bool) *TokenIndices {
	if !head {
		return &TokenIndices{ByKey: map[string][]int{"embed_tokens": slices.Clone(ids)}, List: true}
	}
	return &TokenIndices{ByKey: map[string][]int{"embed_tokens": slices.Clone(ids), "lm_head": slices.Clone(ids)}}
}

// TokensKey is the saved key of module's trainable rows.
func TokensKey(module string) string { return KeyPrefix + module + tokensSuffix }

// tokensModule recognises a trainable-rows key (after base_model.model.), also with PEFT's in-memory adapter name
// after it ("….trainable_tokens_delta.default"), and returns the module and that name.
func tokensModule(key string) (module, adName string, ok bool) {
	i := strings.Index(key, tokensSuffix)
	if i <= 0 {
		return "", "", false
	}
	rest := key[i+len(tokensSuffix):]
	switch {
	case rest == "":
	case strings.HasPrefix(rest, ".") && !strings.Contains(rest[1:], "."):
		adName = rest[1:]
	default:
		return "", "", false
	}
	return key[:i], adName, true
}

// EmbedRow writes into dst the adapter's row for token id of the input embedding, reporting whether it has one
// (llama.TokenEmbedder: Forward looks up every token of a sequence using this adapter through it).
func (a *Adapter) EmbedRow(id int, dst []float32) bool {
	return embedRow(a.Tokens[EmbedModule], id, dst)
}

func embedRow(t *TokenRows, id int, dst []float32) bool {
	if r := t.Row(id); r != nil {
		copy(dst, r)
		return true
	}
	return false
}

// headRows is the rows that replace LM-head rows: the head's own, or with a tied head the embedding's.
func (a *Adapter) headRows() *TokenRows {
	if t := a.Tokens[HeadModule]; t != nil {
		return t
	}
	if a.TiedHead {
		return a.Tokens[EmbedModule]
	}
	return nil
}

// checkTokens validates the trainable rows against the config and the base's [vocab, dim] tables (vocab, dim
// from the head or embedding shape when known).
func (a *Adapter) checkTokens(vocab, dim int) error {
	for _, m := range slices.Sorted(maps.Keys(a.Tokens)) {
		t := a.Tokens[m]
		if m != EmbedModule && m != HeadModule {
			return fmt.Errorf("tensor %q: trainable tokens on %s: only %s and %s are supported", TokensKey(m), m, EmbedModule, HeadModule)
		}
		if vocab > 0 && t.Dim != dim {
			return fmt.Errorf("tensor %q has rows of %d values but the base's %s has %d", TokensKey(m), t.Dim, m, dim)
		}
		for _, id := range t.IDs {
			if id < 0 || (vocab > 0 && id >= vocab) {
				return fmt.Errorf("adapter_config.json: trainable_token_indices: token id %d is outside the vocabulary [0, %d)", id, vocab)
			}
		}
	}
	if a.Tokens[HeadModule] != nil && a.TiedHead {
		return fmt.Errorf("tensor %q: trainable rows for lm_head, but the base ties lm_head to the embedding (its rows follow embed_tokens')", TokensKey(HeadModule))
	}
	return nil
}

// addTokens reads one trainable_tokens_delta tensor (checked against trainable_token_indices).
func (a *Adapter) addTokens(f *safetensors.File, name, module string, info safetensors.TensorInfo) error {
	ids, ok := a.Config.TrainableTokens.For(module)
	if !ok {
		return fmt.Errorf("tensor %q: trainable token rows for %s, but adapter_config.json's trainable_token_indices gives that module no ids", name, module)
	}
	if !info.DType.IsFloat() || len(info.Shape) != 2 || info.Shape[0] != len(ids) || info.Shape[1] == 0 {
		return fmt.Errorf("tensor %q: %s %v, want a float tensor [%d, dim] (one row per id of trainable_token_indices)", name, info.DType, info.Shape, len(ids))
	}
	if _, dup := a.Tokens[module]; dup {
		return fmt.Errorf("tensor %q: %s has trainable token rows twice (several adapters in one file?)", name, module)
	}
	v, err := finiteFloats(f, name)
	if err != nil {
		return err
	}
	if a.Tokens == nil {
		a.Tokens = map[string]*TokenRows{}
	}
	a.Tokens[module] = &TokenRows{IDs: slices.Clone(ids), Values: v, Dim: info.Shape[1]}
	return nil
}

// tokensMatchConfig reports ids in trainable_token_indices whose rows the file does not hold. The input
// embedding's rows are required; an lm_head entry without rows is PEFT's tied head, which saves none.
func (a *Adapter) tokensMatchConfig() error {
	ti := a.Config.TrainableTokens
	if ti == nil {
		return nil
	}
	if ids, ok := ti.For(EmbedModule); ok && len(ids) > 0 && a.Tokens[EmbedModule] == nil {
		return fmt.Errorf("adapter_config.json gives trainable_token_indices %v but the weights have no %q", ids, TokensKey(EmbedModule))
	}
	return nil
}

// HeadTokens overwrites, in logits y [rows, vocab] computed from hidden states x [rows, dim], the logits of the
// tokens whose LM-head rows the adapter replaces (its own head rows, or the embedding's with a tied head).
// ApplyRows("lm_head") does it too; a caller combining several adapters calls it last.
func (a *Adapter) HeadTokens(y, x []float32, rows, vocab int) {
	if t := a.headRows(); t != nil {
		t.headLogits(y, x, rows, vocab)
	}
}
