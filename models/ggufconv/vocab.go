package ggufconv

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/lorakit/lorakit/models/gguf"
	"github.com/lorakit/lorakit/models/tokenizer"
)

// Token types of tokenizer.ggml.token_type, as llama.cpp numbers them.
const (
	tokNormal      int32 = 1
	tokUnknown     int32 = 2
	tokControl     int32 = 3
	tokUserDefined int32 = 4
	tokUnused      int32 = 5
	tokByte        int32 = 6
)

// Tokenizer metadata keys.
const (
	keyTokModel    = "tokenizer.ggml.model"
	keyTokPre      = "tokenizer.ggml.pre"
	keyTokens      = "tokenizer.ggml.tokens"
	keyScores      = "tokenizer.ggml.scores"
	keyTokenType   = "tokenizer.ggml.token_type"
	keyMerges      = "tokenizer.ggml.merges"
	keyBOS         = "tokenizer.ggml.bos_token_id"
	keyEOS         = "tokenizer.ggml.eos_token_id"
	keyUNK         = "tokenizer.ggml.unknown_token_id"
	keyPAD         = "tokenizer.ggml.padding_token_id"
	keyAddBOS      = "tokenizer.ggml.add_bos_token"
	keyAddEOS      = "tokenizer.ggml.add_eos_token"
	keySpacePrefix = "tokenizer.ggml.add_space_prefix"
	keyChat        = "tokenizer.chat_template"
)

// preTokenizers are the byte-level BPE pre-tokenizers llama.cpp knows by name (tokenizer.ggml.pre), each with
// the tokenizer.json normalizer and pre_tokenizer that mean the same thing. Export finds the name of a folder's
// tokenizer here; import rebuilds the tokenizer.json parts from the name.
var preTokenizers = []struct{ name, normalizer, pre string }{
	{"llama-bpe", `null`, `{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},"behavior":"Isolated","invert":false},{"type":"ByteLevel","add_prefix_space":false,"use_regex":false}]}`},
	{"qwen2", `{"type":"NFC"}`, `{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},"behavior":"Isolated","invert":false},{"type":"ByteLevel","add_prefix_space":false,"use_regex":false}]}`},
	{"deepseek-v3", `{"type":"Sequence","normalizers":[]}`, `{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"\\p{N}{1,3}"},"behavior":"Isolated","invert":false},{"type":"Split","pattern":{"Regex":"[一-龥぀-ゟ゠-ヿ]+"},"behavior":"Isolated","invert":false},{"type":"Split","pattern":{"Regex":"[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_` + "`" + `{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"},"behavior":"Isolated","invert":false},{"type":"ByteLevel","add_prefix_space":false,"use_regex":false}]}`},
	{"smollm", `null`, `{"type":"Sequence","pretokenizers":[{"type":"Digits","individual_digits":true},{"type":"ByteLevel","add_prefix_space":false,"use_regex":true}]}`},
	{"gpt-2", `null`, `{"type":"ByteLevel","add_prefix_space":false,"use_regex":true}`},
}

// canonJSON re-encodes a JSON value with sorted keys, dropping trim_offsets (it changes offsets, never ids), so
// two spellings of the same component compare equal. An empty or null value is "null".
func canonJSON(raw json.RawMessage) string {
	if len(bytes.TrimSpace(raw)) == 0 {
		return "null"
	}
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return string(raw)
	}
	var strip func(any) any
	strip = func(v any) any {
		switch x := v.(type) {
		case map[string]any:
			delete(x, "trim_offsets")
			for k, e := range x {
				x[k] = strip(e)
			}
		case []any:
			for i, e := range x {
				x[i] = strip(e)
			}
		}
		return v
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.Encode(strip(v))
	return strings.TrimSpace(buf.String())
}

type rawTokenizer struct {
	AddedTokens []struct {
		ID      int    `json:"id"`
		Content string `json:"content"`
		Special bool   `json:"special"`
	} `json:"added_tokens"`
	Normalizer   json.RawMessage `json:"normalizer"`
	PreTokenizer json.RawMessage `json:"pre_tokenizer"`
	Model        struct {
		Type         string          `json:"type"`
		Vocab        map[string]int  `json:"vocab"`
		Merges       json.RawMessage `json:"merges"`
		UnkToken     *string         `json:"unk_token"`
		ByteFallback bool            `json:"byte_fallback"`
	} `json:"model"`
}

func parseMergeList(raw json.RawMessage) ([][2]string, error) {
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return nil, nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("model.merges: %w", err)
	}
	out := make([][2]string, len(list))
	for i, m := range list {
		var s string
		if json.Unmarshal(m, &s) == nil {
			a, b, ok := strings.Cut(s, " ")
			if !ok {
				return nil, fmt.Errorf("model.merges[%d]: %q is not \"left right\"", i, s)
			}
			out[i] = [2]string{a, b}
			continue
		}
		var p []string
		if err := json.Unmarshal(m, &p); err != nil || len(p) != 2 {
			return nil, fmt.Errorf("model.merges[%d]: want \"left right\" or a pair", i)
		}
		out[i] = [2]string{p[0], p[1]}
	}
	return out, nil
}

var byteToken = regexp.MustCompile(`^<0x[0-9A-Fa-f]{2}>$`)

// VocabKV returns the tokenizer.* metadata of the folder dir for a model with vocabSize embedding rows: the
// tokens (padded to vocabSize with [PADn] entries, as llama.cpp's converter does), their types, and either
// SentencePiece scores (tokenizer.ggml.model "llama", for BPE with byte fallback) or the merges and the named
// pre-tokenizer (tokenizer.ggml.model "gpt2", byte-level BPE); special token ids, add_bos/add_eos as encoding
// with special tokens shows them, and the chat template.
//
// complexity: the two tokenizer models' key sets side by side, each a short branch.
func VocabKV(dir string, vocabSize int) ([]gguf.KV, error) {
	path := filepath.Join(dir, "tokenizer.json")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ggufconv: %w", err)
	}
	var raw rawTokenizer
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("ggufconv: %s: %w", path, err)
	}
	if raw.Model.Type != "BPE" && raw.Model.Type != "" {
		return nil, fmt.Errorf("ggufconv: %s: model.type %q is not supported (BPE)", path, raw.Model.Type)
	}
	merges, err := parseMergeList(raw.Model.Merges)
	if err != nil {
		return nil, fmt.Errorf("ggufconv: %s: %w", path, err)
	}
	tok, err := tokenizer.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("ggufconv: %w", err)
	}
	n := max(vocabSize, tok.VocabSize())
	tokens := make([]string, n)
	types := make([]int32, n)
	present := make([]bool, n)
	for s, id := range raw.Model.Vocab {
		if id < 0 || id >= n {
			return nil, fmt.Errorf("ggufconv: %s: model.vocab[%q] = %d is outside 0..%d", path, s, id, n-1)
		}
		tokens[id], types[id], present[id] = s, tokNormal, true
	}
	unk := -1
	if raw.Model.UnkToken != nil {
		if id, ok := raw.Model.Vocab[*raw.Model.UnkToken]; ok {
			unk = id
		}
	}
	for _, a := range raw.AddedTokens {
		if a.ID < 0 || a.ID >= n {
			return nil, fmt.Errorf("ggufconv: %s: added token %q id %d is outside 0..%d", path, a.Content, a.ID, n-1)
		}
		tokens[a.ID], present[a.ID] = a.Content, true
		types[a.ID] = tokUserDefined
		if a.Special {
			types[a.ID] = tokControl
		}
	}
	spm := raw.Model.ByteFallback
	kvs := []gguf.KV{}
	if spm {
		kvs = append(kvs, gguf.KV{Key: keyTokModel, Value: "llama"}, gguf.KV{Key: keyTokPre, Value: "default"})
	} else {
		pre, err := preTokenizerName(raw.Normalizer, raw.PreTokenizer)
		if err != nil {
			return nil, fmt.Errorf("ggufconv: %s: %w", path, err)
		}
		kvs = append(kvs, gguf.KV{Key: keyTokModel, Value: "gpt2"}, gguf.KV{Key: keyTokPre, Value: pre})
	}
	for i := range tokens {
		switch {
		case !present[i]:
			tokens[i], types[i] = "[PAD"+strconv.Itoa(i)+"]", tokUserDefined
			if spm {
				types[i] = tokUnused
			}
		case spm && i == unk:
			types[i] = tokUnknown
		case spm && types[i] == tokNormal && byteToken.MatchString(tokens[i]):
			types[i] = tokByte
		}
	}
	kvs = append(kvs, gguf.KV{Key: keyTokens, Value: tokens})
	if spm {
		kvs = append(kvs, gguf.KV{Key: keyScores, Value: spmScores(tokens, types, merges)})
	}
	kvs = append(kvs, gguf.KV{Key: keyTokenType, Value: types})
	if !spm {
		ms := make([]string, len(merges))
		for i, m := range merges {
			ms[i] = m[0] + " " + m[1]
		}
		kvs = append(kvs, gguf.KV{Key: keyMerges, Value: ms})
	}
	kvs = append(kvs, specialKV(tok, unk)...)
	if spm {
		kvs = append(kvs, gguf.KV{Key: keySpacePrefix, Value: strings.Contains(canonJSON(raw.Normalizer), `"type":"Prepend"`)})
	}
	if ct := tok.Config().ChatTemplate; ct != "" {
		kvs = append(kvs, gguf.KV{Key: keyChat, Value: ct})
	}
	return kvs, nil
}

func preTokenizerName(norm, pre json.RawMessage) (string, error) {
	n, p := canonJSON(norm), canonJSON(pre)
	for _, t := range preTokenizers {
		if canonJSON(json.RawMessage(t.normalizer)) == n && canonJSON(json.RawMessage(t.pre)) == p {
			return t.name, nil
		}
	}
	return "", fmt.Errorf("this byte-level pre-tokenizer has no llama.cpp name that lorakit knows (known: %s); normalizer %s, pre_tokenizer %.300s",
		strings.Join(preNames(), ", "), n, p)
}

func preNames() []string {
	var out []string
	for _, t := range preTokenizers {
		out = append(out, t.name)
	}
	return out
}

// spmScores gives each token the score llama.cpp's SentencePiece tokenizer ranks merges by: a token made by a
// merge scores minus the rank of the first merge that makes it, so that "merge the adjacent pair whose result
// scores highest" replays the BPE merge order; tokens no merge makes score below all of them, control and
// byte tokens 0.
func spmScores(tokens []string, types []int32, merges [][2]string) []float32 {
	first := make(map[string]int, len(merges))
	for i, m := range merges {
		s := m[0] + m[1]
		if _, ok := first[s]; !ok {
			first[s] = i
		}
	}
	scores := make([]float32, len(tokens))
	for i, s := range tokens {
		switch types[i] {
		case tokNormal, tokUserDefined:
			if r, ok := first[s]; ok {
				scores[i] = -float32(r)
			} else {
				scores[i] = -float32(len(merges))
			}
		case tokUnused:
			scores[i] = -1e9
		}
	}
	return scores
}

// specialKV writes the special token ids and whether encoding adds BOS/EOS, found by encoding a probe text with
// and without special tokens (so both the Llama config flags and a TemplateProcessing post-processor count).
func specialKV(tok *tokenizer.Tokenizer, unk int) []gguf.KV {
	var kvs []gguf.KV
	id := func(s string) (uint32, bool) {
		if s == "" {
			return 0, false
		}
		i, ok := tok.TokenID(s)
		return uint32(i), ok
	}
	c := tok.Config()
	if i, ok := id(c.BOSToken); ok {
		kvs = append(kvs, gguf.KV{Key: keyBOS, Value: i})
	}
	if i, ok := id(c.EOSToken); ok {
		kvs = append(kvs, gguf.KV{Key: keyEOS, Value: i})
	}
	if unk >= 0 {
		kvs = append(kvs, gguf.KV{Key: keyUNK, Value: uint32(unk)})
	}
	if i, ok := id(c.PadToken); ok {
		kvs = append(kvs, gguf.KV{Key: keyPAD, Value: i})
	}
	plain, special := tok.Encode("a", false), tok.Encode("a", true)
	var addBOS, addEOS bool
	for k := 0; k+len(plain) <= len(special); k++ {
		if slices.Equal(special[k:k+len(plain)], plain) {
			addBOS, addEOS = k > 0, k+len(plain) < len(special)
			break
		}
	}
	return append(kvs, gguf.KV{Key: keyAddBOS, Value: addBOS}, gguf.KV{Key: keyAddEOS, Value: addEOS})
}

// TokenizerFiles rebuilds tokenizer.json and tokenizer_config.json contents from the tokenizer.* metadata of a
// GGUF file, for tokenizer.Parse: SentencePiece-style vocabularies ("llama") get BPE merges derived from the
// scores the way Hugging Face's SentencePiece extractor derives them (every split of a token into two tokens,
// ordered by the token's score); byte-level ones ("gpt2") take the merges as stored and the pre-tokenizer
// named by tokenizer.ggml.pre.
//
// complexity: the two vocabulary kinds (llama, gpt2) and their special tokens, one branch per GGUF key.
func TokenizerFiles(g *gguf.File) (tokJSON, cfgJSON []byte, err error) {
	model, _, err := g.String(keyTokModel)
	if err != nil {
		return nil, nil, err
	}
	tv, _ := g.Get(keyTokens)
	tokens, ok := tv.([]string)
	if !ok || len(tokens) == 0 {
		return nil, nil, fmt.Errorf("%s is missing or not an array of strings", keyTokens)
	}
	types := make([]int32, len(tokens))
	for i := range types {
		types[i] = tokNormal
	}
	if v, ok := g.Get(keyTokenType); ok {
		t, isI32 := v.([]int32)
		if !isI32 || len(t) != len(tokens) {
			return nil, nil, fmt.Errorf("%s must be an int32 array as long as %s", keyTokenType, keyTokens)
		}
		types = t
	}
	vocab := make(map[string]int, len(tokens))
	type added struct {
		ID         int    `json:"id"`
		Content    string `json:"content"`
		SingleWord bool   `json:"single_word"`
		LStrip     bool   `json:"lstrip"`
		RStrip     bool   `json:"rstrip"`
		Normalized bool   `json:"normalized"`
		Special    bool   `json:"special"`
	}
	var addedTokens []added
	for i, s := range tokens {
		if _, dup := vocab[s]; !dup {
			vocab[s] = i
		}
		switch types[i] {
		case tokControl, tokUnknown, tokUserDefined:
			addedTokens = append(addedTokens, added{ID: i, Content: s, Special: types[i] != tokUserDefined})
		}
	}
	optID := func(key string) (int, bool, error) {
		v, ok, err := g.Int(key)
		if err != nil || !ok {
			return 0, false, err
		}
		if v < 0 || v >= int64(len(tokens)) {
			return 0, false, fmt.Errorf("%s = %d is outside the vocabulary", key, v)
		}
		return int(v), true, nil
	}
	bos, hasBOS, err := optID(keyBOS)
	if err != nil {
		return nil, nil, err
	}
	eos, hasEOS, err := optID(keyEOS)
	if err != nil {
		return nil, nil, err
	}
	unk, hasUNK, err := optID(keyUNK)
	if err != nil {
		return nil, nil, err
	}
	pad, hasPAD, err := optID(keyPAD)
	if err != nil {
		return nil, nil, err
	}
	addBOS, _, err := g.Bool(keyAddBOS)
	if err != nil {
		return nil, nil, err
	}
	addEOS, _, err := g.Bool(keyAddEOS)
	if err != nil {
		return nil, nil, err
	}
	tj := map[string]any{"version": "1.0", "added_tokens": addedTokens}
	m := map[string]any{"type": "BPE", "vocab": vocab}
	switch model {
	case "llama":
		scores := make([]float32, len(tokens))
		if v, ok := g.Get(keyScores); ok {
			s, isF32 := v.([]float32)
			if !isF32 || len(s) != len(tokens) {
				return nil, nil, fmt.Errorf("%s must be a float32 array as long as %s", keyScores, keyTokens)
			}
			scores = s
		}
		spacePrefix, has, err := g.Bool(keySpacePrefix)
		if err != nil {
			return nil, nil, err
		}
		if !has {
			spacePrefix = true // llama.cpp's default for SentencePiece vocabularies
		}
		m["merges"] = deriveMerges(tokens, types, scores, vocab)
		m["byte_fallback"], m["fuse_unk"] = true, true
		if hasUNK {
			m["unk_token"] = tokens[unk]
		}
		norm := []any{map[string]any{"type": "Replace", "pattern": map[string]any{"String": " "}, "content": "▁"}}
		dec := []any{map[string]any{"type": "Replace", "pattern": map[string]any{"String": "▁"}, "content": " "},
			map[string]any{"type": "ByteFallback"}, map[string]any{"type": "Fuse"}}
		if spacePrefix {
			norm = append([]any{map[string]any{"type": "Prepend", "prepend": "▁"}}, norm...)
			dec = append(dec, map[string]any{"type": "Strip", "content": " ", "start": 1, "stop": 0})
		}
		tj["normalizer"] = map[string]any{"type": "Sequence", "normalizers": norm}
		tj["pre_tokenizer"] = nil
		tj["decoder"] = map[string]any{"type": "Sequence", "decoders": dec}
	case "gpt2":
		mv, _ := g.Get(keyMerges)
		ms, ok := mv.([]string)
		if !ok {
			return nil, nil, fmt.Errorf("%s is missing or not an array of strings", keyMerges)
		}
		m["merges"] = ms
		pre, _, err := g.String(keyTokPre)
		if err != nil {
			return nil, nil, err
		}
		found := false
		for _, t := range preTokenizers {
			if t.name == pre {
				tj["normalizer"], tj["pre_tokenizer"] = json.RawMessage(t.normalizer), json.RawMessage(t.pre)
				found = true
			}
		}
		if !found {
			return nil, nil, fmt.Errorf("%s %q is not supported (known: %s)", keyTokPre, pre, strings.Join(preNames(), ", "))
		}
		tj["decoder"] = map[string]any{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}
	case "":
		return nil, nil, fmt.Errorf("%s is missing", keyTokModel)
	default:
		return nil, nil, fmt.Errorf("%s %q is not supported (llama, gpt2)", keyTokModel, model)
	}
	tj["model"] = m
	tj["post_processor"] = postProcessor(tokens, addBOS && hasBOS, bos, addEOS && hasEOS, eos)
	cfg := map[string]any{"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": addBOS, "add_eos_token": addEOS,
		"clean_up_tokenization_spaces": false}
	for key, p := range map[string]struct {
		id  int
		has bool
	}{"bos_token": {bos, hasBOS}, "eos_token": {eos, hasEOS}, "unk_token": {unk, hasUNK}, "pad_token": {pad, hasPAD}} {
		if p.has {
			cfg[key] = tokens[p.id]
		}
	}
	if ct, ok, err := g.String(keyChat); err != nil {
		return nil, nil, err
	} else if ok {
		cfg["chat_template"] = ct
	}
	if tokJSON, err = marshal(tj); err != nil {
		return nil, nil, err
	}
	cfgJSON, err = marshal(cfg)
	return tokJSON, cfgJSON, err
}

func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func postProcessor(tokens []string, addBOS bool, bos int, addEOS bool, eos int) any {
	single := []any{}
	special := map[string]any{}
	st := func(id int) any {
		special[tokens[id]] = map[string]any{"id": tokens[id], "ids": []int{id}, "tokens": []string{tokens[id]}}
		return map[string]any{"SpecialToken": map[string]any{"id": tokens[id], "type_id": 0}}
	}
	if addBOS {
		single = append(single, st(bos))
	}
	single = append(single, map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}})
	if addEOS {
		single = append(single, st(eos))
	}
	return map[string]any{"type": "TemplateProcessing", "single": single, "pair": single, "special_tokens": special}
}

// deriveMerges lists, for every normal or user-defined token, each split into two tokens of the vocabulary;
// splits of one token are ordered by (left id, right id) and tokens by score, highest first (ties by id).
func deriveMerges(tokens []string, types []int32, scores []float32, vocab map[string]int) []string {
	type merge struct {
		l, r  int
		score float32
		id    int
	}
	var all []merge
	for id, s := range tokens {
		if types[id] != tokNormal && types[id] != tokUserDefined {
			continue
		}
		start := len(all)
		for k := 1; k < len(s); k++ {
			l, okL := vocab[s[:k]]
			r, okR := vocab[s[k:]]
			if okL && okR {
				all = append(all, merge{l, r, scores[id], id})
			}
		}
		local := all[start:]
		sort.Slice(local, func(i, j int) bool {
			if local[i].l != local[j].l {
				return local[i].l < local[j].l
			}
			return local[i].r < local[j].r
		})
	}
	sort.SliceStable(all, func(i, j int) bool {
		if all[i].score != all[j].score {
			return all[i].score > all[j].score
		}
		return all[i].id < all[j].id
	})
	out := make([]string, len(all))
	for i, m := range all {
		out[i] = tokens[m.l] + " " + tokens[m.r]
	}
	return out
}
