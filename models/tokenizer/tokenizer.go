// Package tokenizer loads Hugging Face tokenizer.json / tokenizer_config.json files and encodes and decodes
// text exactly as the `tokenizers` library (and transformers on top of it) does, for BPE models: byte-level
// (GPT-2, Llama 3, Qwen, DeepSeek) and SentencePiece-style with byte fallback (Llama 2, Mistral, Gemma).
//
// Encoding follows tokenizers' pipeline: added tokens that are not normalised are cut out of the raw text,
// each remaining segment is normalised, normalised added tokens are cut out, the rest is pre-tokenised and
// every pre-token is merged by BPE; the post-processor adds BOS/EOS when asked. A Tokenizer is safe for
// concurrent use.
//
// Supported components: normalizers Sequence, Prepend, Replace (string or regex), NFC/NFD/NFKC/NFKD,
// Lowercase, Strip, StripAccents, BertNormalizer; pre-tokenizers Sequence, Split (all behaviours, invert),
// ByteLevel, Metaspace (prepend_scheme always/first/never), Digits, Punctuation, Whitespace,
// WhitespaceSplit, BertPreTokenizer; post-processors TemplateProcessing, ByteLevel, Roberta/BertProcessing,
// Sequence; decoders ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, WordPiece, BPEDecoder,
// Sequence. Unsupported types (Unigram/WordPiece models, Precompiled normalizer, CTC decoder) are load
// errors that name them.
//
// transformers behaviour on top of tokenizers: for tokenizer_class LlamaTokenizer(Fast) and
// GemmaTokenizer(Fast) the special tokens added come from add_bos_token / add_eos_token (as
// update_post_processor does; this is why DeepSeek-V3 gets a BOS its tokenizer.json does not add), and
// Decode applies clean_up_tokenization_spaces when the config sets it (DecodeRaw does not).
//
// Regex split patterns run on regexp2 (.NET syntax, close to Oniguruma) with Go's Unicode 15 tables widened
// by the Unicode 16 assignments tokenizers' Oniguruma knows; the GPT-2, Llama 3 and Qwen patterns have
// hand-written matchers. Known gap: StripAccents/BertNormalizer use Go's mark tables, which know a few marks
// (Unicode 13+) that tokenizers' tables do not.
package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unicode/utf8"
)

// Tokenizer encodes and decodes text. Create one with Load or Parse.
type Tokenizer struct {
	model   *bpe
	norm    normalizer
	pre     preTokenizer
	dec     decoder
	post    template
	config  *TokenizerConfig
	tokens  []string // id -> token string (model vocabulary and added tokens)
	added   map[int]*addedToken
	addedBy map[string]int // added token content -> id
	// rawTrie matches added tokens with normalized=false on the raw text, normTrie the others on normalised
	// segments; rawToks / normToks are their patterns' tokens.
	rawTrie, normTrie  *trie
	rawToks, normToks  []*addedToken
	hasByteFallbackDec bool
	pieces             *pieceTable // TokenBytes, built on first use
}

type rawTokenizerJSON struct {
	AddedTokens   []addedToken    `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       json.RawMessage `json:"decoder"`
	Model         rawModel        `json:"model"`
}

type rawModel struct {
	Type                    string          `json:"type"`
	Vocab                   json.RawMessage `json:"vocab"`
	Merges                  json.RawMessage `json:"merges"`
	UnkToken                *string         `json:"unk_token"`
	FuseUnk                 bool            `json:"fuse_unk"`
	ByteFallback            bool            `json:"byte_fallback"`
	IgnoreMerges            bool            `json:"ignore_merges"`
	ContinuingSubwordPrefix *string         `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string         `json:"end_of_word_suffix"`
	Dropout                 *float64        `json:"dropout"`
}

// Load reads dir/tokenizer.json and, when present, dir/tokenizer_config.json.
func Load(dir string) (*Tokenizer, error) {
	path := filepath.Join(dir, "tokenizer.json")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	cfgPath := filepath.Join(dir, "tokenizer_config.json")
	cfgData, err := os.ReadFile(cfgPath)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("tokenizer: %w", err)
		}
		cfgData = nil
	}
	var cfg *TokenizerConfig
	if cfgData != nil {
		if cfg, err = parseConfig(cfgData, cfgPath, dir); err != nil {
			return nil, fmt.Errorf("tokenizer: %w", err)
		}
	} else if cfg, err = parseConfig([]byte("{}"), cfgPath, dir); err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	t, err := parse(data, cfg)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", path, err)
	}
	return t, nil
}

// Parse builds a Tokenizer from tokenizer.json content and tokenizer_config.json content (nil: none).
func Parse(tokenizerJSON, configJSON []byte) (*Tokenizer, error) {
	if configJSON == nil {
		configJSON = []byte("{}")
	}
	cfg, err := parseConfig(configJSON, "tokenizer_config.json", "")
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	t, err := parse(tokenizerJSON, cfg)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: tokenizer.json: %w", err)
	}
	return t, nil
}

func parseMerges(raw json.RawMessage) ([][2]string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if out, ok := scanMerges(raw); ok {
		return out, nil
	}
	inner := bytes.TrimSpace(bytes.TrimPrefix(raw, []byte("[")))
	if len(inner) > 0 && inner[0] == '"' {
		var list []string
		if err := json.Unmarshal(raw, &list); err != nil {
			return nil, fmt.Errorf("model.merges: %w", err)
		}
		out := make([][2]string, len(list))
		for i, m := range list {
			a, b, ok := strings.Cut(m, " ")
			if !ok {
				return nil, fmt.Errorf("model.merges[%d]: %q is not \"left right\"", i, m)
			}
			out[i] = [2]string{a, b}
		}
		return out, nil
	}
	var pairs [][]string
	if err := json.Unmarshal(raw, &pairs); err != nil {
		return nil, fmt.Errorf("model.merges: %w", err)
	}
	out := make([][2]string, len(pairs))
	for i, p := range pairs {
		if len(p) != 2 {
			return nil, fmt.Errorf("model.merges[%d]: want a pair, got %d strings", i, len(p))
		}
		out[i] = [2]string{p[0], p[1]}
	}
	return out, nil
}

// quickDecode fills raw using the fast scanner for the large vocab and merges; false means "use
// encoding/json" (which then reports any error).
func quickDecode(data []byte, raw *rawTokenizerJSON) bool {
	top, ok := scanObject(data)
	if !ok {
		return false
	}
	model, ok := scanObject(top["model"])
	if !ok {
		return false
	}
	small := []byte{'{'}
	for k, v := range model {
		if k == "vocab" || k == "merges" {
			continue
		}
		if len(small) > 1 {
			small = append(small, ',')
		}
		kb, _ := json.Marshal(k)
		small = append(append(append(small, kb...), ':'), v...)
	}
	small = append(small, '}')
	if json.Unmarshal(small, &raw.Model) != nil {
		return false
	}
	raw.Model.Vocab, raw.Model.Merges = model["vocab"], model["merges"]
	if v, ok := top["added_tokens"]; ok && json.Unmarshal(v, &raw.AddedTokens) != nil {
		return false
	}
	for k, dst := range map[string]*json.RawMessage{"normalizer": &raw.Normalizer, "pre_tokenizer": &raw.PreTokenizer,
		"post_processor": &raw.PostProcessor, "decoder": &raw.Decoder} {
		if v, ok := top[k]; ok {
			if !json.Valid(v) {
				return false
			}
			*dst = v
		}
	}
	return true
}

// complexity: tokenizer.json's sections in file order (model, added tokens, normalizer, pre-tokenizer, post-processor, decoder), each validated where it is read.
func parse(data []byte, cfg *TokenizerConfig) (*Tokenizer, error) {
	var raw rawTokenizerJSON
	if !quickDecode(data, &raw) {
		raw = rawTokenizerJSON{}
		if err := json.Unmarshal(data, &raw); err != nil {
			return nil, err
		}
	}
	if raw.Model.Type != "" && raw.Model.Type != "BPE" {
		return nil, fmt.Errorf("model.type %q is not supported (only BPE)", raw.Model.Type)
	}
	if len(raw.Model.Vocab) == 0 || string(raw.Model.Vocab) == "null" {
		return nil, errors.New("model.vocab is missing")
	}
	vocab, ok := scanVocab(raw.Model.Vocab)
	if !ok {
		if err := json.Unmarshal(raw.Model.Vocab, &vocab); err != nil {
			return nil, fmt.Errorf("model.vocab: %w", err)
		}
	}
	if raw.Model.Dropout != nil && *raw.Model.Dropout > 0 && *raw.Model.Dropout < 1 {
		return nil, fmt.Errorf("model.dropout %v is not supported", *raw.Model.Dropout)
	}
	t := &Tokenizer{config: cfg, added: make(map[int]*addedToken), addedBy: make(map[string]int), pieces: &pieceTable{}}
	m := &bpe{vocab: vocab, unkID: -1, fuseUnk: raw.Model.FuseUnk, byteFallback: raw.Model.ByteFallback,
		ignoreMerges: raw.Model.IgnoreMerges}
	if raw.Model.ContinuingSubwordPrefix != nil {
		m.contPrefix = *raw.Model.ContinuingSubwordPrefix
	}
	if raw.Model.EndOfWordSuffix != nil {
		m.eowSuffix = *raw.Model.EndOfWordSuffix
	}
	// Ids are dense in practice; bounding them by the entry count keeps a hostile file from making us
	// allocate for ids it only claims.
	maxID := 2*(len(m.vocab)+len(raw.AddedTokens)) + 1024
	size := 0
	for tok, id := range m.vocab {
		if id < 0 || id > maxID {
			return nil, fmt.Errorf("model.vocab[%q]: id %d out of range", tok, id)
		}
		size = max(size, id+1)
	}
	for i := range raw.AddedTokens {
		a := &raw.AddedTokens[i]
		// tokenizers gives an added token that is also a vocabulary entry the entry's id.
		if id, ok := m.vocab[a.Content]; ok {
			a.ID = id
		}
		if a.ID < 0 || a.ID > maxID {
			return nil, fmt.Errorf("added_tokens[%d]: id %d out of range", i, a.ID)
		}
		if a.Content == "" {
			return nil, fmt.Errorf("added_tokens[%d]: empty content", i)
		}
		size = max(size, a.ID+1)
	}
	t.tokens = make([]string, size)
	for tok, id := range m.vocab {
		t.tokens[id] = tok
	}
	if raw.Model.UnkToken != nil {
		id, ok := m.vocab[*raw.Model.UnkToken]
		if !ok {
			return nil, fmt.Errorf("model.unk_token %q is not in the vocabulary", *raw.Model.UnkToken)
		}
		m.unkID = id
	}
	merges, err := parseMerges(raw.Model.Merges)
	if err != nil {
		return nil, err
	}
	m.init()
	if err := m.resolveMerges(merges); err != nil {
		return nil, err
	}
	t.model = m

	if t.norm, err = parseNormalizer(raw.Normalizer); err != nil {
		return nil, fmt.Errorf("normalizer: %w", err)
	}
	if t.pre, err = parsePreTokenizer(raw.PreTokenizer); err != nil {
		return nil, fmt.Errorf("pre_tokenizer: %w", err)
	}
	if t.dec, err = parseDecoder(raw.Decoder); err != nil {
		return nil, fmt.Errorf("decoder: %w", err)
	}
	t.hasByteFallbackDec = hasByteFallback(t.dec)

	t.rawTrie, t.normTrie = newTrie(), newTrie()
	for i := range raw.AddedTokens {
		a := &raw.AddedTokens[i]
		t.tokens[a.ID] = a.Content
		t.added[a.ID] = a
		if _, dup := t.addedBy[a.Content]; !dup {
			t.addedBy[a.Content] = a.ID
		}
		if a.Normalized {
			content := a.Content
			if t.norm != nil {
				content = t.norm.normalize(content)
			}
			t.tokens[a.ID] = content // tokenizers decodes a normalized added token as its normalized form
			t.normTrie.add(content, len(t.normToks))
			t.normToks = append(t.normToks, a)
		} else {
			t.rawTrie.add(a.Content, len(t.rawToks))
			t.rawToks = append(t.rawToks, a)
		}
	}

	if llamaLikeClass(cfg.TokenizerClass) {
		// transformers' LlamaTokenizerFast / GemmaTokenizerFast rebuild the post-processor from the config.
		if cfg.AddBOSToken {
			id, ok := t.TokenID(cfg.BOSToken)
			if !ok {
				return nil, fmt.Errorf("tokenizer_config.json: add_bos_token is set but bos_token %q is not a token", cfg.BOSToken)
			}
			t.post.before = []int{id}
		}
		if cfg.AddEOSToken {
			id, ok := t.TokenID(cfg.EOSToken)
			if !ok {
				return nil, fmt.Errorf("tokenizer_config.json: add_eos_token is set but eos_token %q is not a token", cfg.EOSToken)
			}
			t.post.after = []int{id}
		}
	} else if t.post, err = parsePostProcessor(raw.PostProcessor); err != nil {
		return nil, fmt.Errorf("post_processor: %w", err)
	}
	for _, id := range append(append([]int(nil), t.post.before...), t.post.after...) {
		if id < 0 || id >= len(t.tokens) {
			return nil, fmt.Errorf("post_processor: token id %d outside the vocabulary", id)
		}
	}
	return t, nil
}

// resolveMerges fills m.merges (and metaSplit) from the merge list. The vocabulary lookups, the slow part for
// Gemma-sized files, run on two goroutines.
func (m *bpe) resolveMerges(merges [][2]string) error {
	type resolved struct{ key, val uint64 }
	out := make([]resolved, len(merges))
	errs := make([]error, 2)
	metas := make([][]string, 2) // merge results with a ▁ after their first byte (see setMetaSplit)
	prefixLen := len(m.contPrefix)
	work := func(part, lo, hi int) {
		buf := make([]byte, 0, 64)
		for i := lo; i < hi; i++ {
			p := merges[i]
			a, ok1 := m.vocab[p[0]]
			b, ok2 := m.vocab[p[1]]
			if !ok1 || !ok2 {
				errs[part] = fmt.Errorf("model.merges[%d]: %q %q: token not in the vocabulary", i, p[0], p[1])
				return
			}
			right := p[1]
			if prefixLen > 0 && strings.HasPrefix(right, m.contPrefix) {
				right = right[prefixLen:]
			}
			buf = append(append(buf[:0], p[0]...), right...)
			merged, ok := m.vocab[string(buf)]
			if !ok {
				errs[part] = fmt.Errorf("model.merges[%d]: merged token %q not in the vocabulary", i, buf)
				return
			}
			out[i] = resolved{pairKey(a, b), uint64(i)<<32 | uint64(merged)}
			if len(buf) > 1 && bytes.Contains(buf[1:], []byte(metaspace)) {
				metas[part] = append(metas[part], string(buf))
			}
		}
	}
	half := len(merges) / 2
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); work(1, half, len(merges)) }()
	work(0, 0, half)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	m.merges = make(map[uint64]uint64, len(merges))
	for _, r := range out {
		m.merges[r.key] = r.val // a repeated pair keeps its last rank, as in tokenizers
	}
	m.setMetaSplit(append(metas[0], metas[1]...))
	return nil
}

func hasByteFallback(d decoder) bool {
	switch d := d.(type) {
	case byteFallbackDecoder:
		return true
	case seqDecoder:
		for _, s := range d {
			if hasByteFallback(s) {
				return true
			}
		}
	}
	return false
}

// Config returns the parsed tokenizer_config.json (zero values when the file is absent).
func (t *Tokenizer) Config() *TokenizerConfig { return t.config }

// VocabSize is the number of token ids (model vocabulary plus added tokens; highest id + 1).
func (t *Tokenizer) VocabSize() int { return len(t.tokens) }

// TokenID returns the id of a token string (an added token's content or a vocabulary entry).
func (t *Tokenizer) TokenID(s string) (int, bool) {
	if id, ok := t.addedBy[s]; ok {
		return id, true
	}
	id, ok := t.model.vocab[s]
	return id, ok
}

// Token returns the token string of id ("" when id is unknown).
func (t *Tokenizer) Token(id int) string {
	if id < 0 || id >= len(t.tokens) {
		return ""
	}
	return t.tokens[id]
}

// IsSpecial reports whether id is an added token marked special.
func (t *Tokenizer) IsSpecial(id int) bool {
	a, ok := t.added[id]
	return ok && a.Special
}

// BOS returns the id of tokenizer_config.json's bos_token.
func (t *Tokenizer) BOS() (int, bool) {
	if t.config.BOSToken == "" {
		return 0, false
	}
	return t.TokenID(t.config.BOSToken)
}

// EOS returns the id of tokenizer_config.json's eos_token.
func (t *Tokenizer) EOS() (int, bool) {
	if t.config.EOSToken == "" {
		return 0, false
	}
	return t.TokenID(t.config.EOSToken)
}

// Encode tokenises text. addSpecial adds what the post-processor adds (usually BOS), as transformers'
// add_special_tokens=True does. Invalid UTF-8 bytes are replaced by U+FFFD first.
func (t *Tokenizer) Encode(text string, addSpecial bool) []int {
	ids, _ := t.encode(text, addSpecial, -1)
	return ids
}

// EncodeLimit is Encode that gives up once the ids number more than limit (ok is false then, and ids is a
// prefix): a server refuses a text far over its context without tokenizing, or holding the ids of, all of it.
func (t *Tokenizer) EncodeLimit(text string, addSpecial bool, limit int) (ids []int, ok bool) {
	return t.encode(text, addSpecial, max(limit, 0))
}

// encode is Encode stopping past limit ids (limit < 0: no limit).
func (t *Tokenizer) encode(text string, addSpecial bool, limit int) ([]int, bool) {
	if !utf8.ValidString(text) {
		text = strings.ToValidUTF8(text, "\uFFFD")
	}
	capacity := len(text)/3 + 4
	if limit >= 0 {
		capacity = min(capacity, limit+4)
	}
	ids := make([]int, 0, capacity)
	over := func() bool { return limit >= 0 && len(ids) > limit }
	if addSpecial {
		ids = append(ids, t.post.before...)
	}
	var segs, subs []segment
	emit := func(p piece) {
		if !over() { // the pre-tokenizer still walks the rest, but nothing more is merged or kept
			ids = t.model.tokenize(p, ids)
		}
	}
	segs = splitAdded(text, 0, t.rawTrie, t.rawToks, segs)
	for _, seg := range segs {
		if over() {
			return ids, false
		}
		if seg.id >= 0 {
			ids = append(ids, seg.id)
			continue
		}
		s := seg.text
		if t.norm != nil {
			s = t.norm.normalize(s)
		}
		subs = splitAdded(s, seg.start, t.normTrie, t.normToks, subs[:0])
		for _, sub := range subs {
			if over() {
				return ids, false
			}
			if sub.id >= 0 {
				ids = append(ids, sub.id)
				continue
			}
			p := piece{s: sub.text, first: sub.start == 0}
			if t.pre != nil {
				t.pre.each(p, emit)
			} else {
				emit(p)
			}
		}
	}
	if addSpecial {
		ids = append(ids, t.post.after...)
	}
	return ids, !over()
}

// tokenStrings maps ids to token strings, skipping unknown ids and, when skipSpecial, special tokens.
func (t *Tokenizer) tokenStrings(ids []int, skipSpecial bool) []string {
	toks := make([]string, 0, len(ids))
	for _, id := range ids {
		if id < 0 || id >= len(t.tokens) || (skipSpecial && t.IsSpecial(id)) {
			continue
		}
		if _, ok := t.added[id]; !ok && t.tokens[id] == "" {
			continue // hole in the vocabulary
		}
		toks = append(toks, t.tokens[id])
	}
	return toks
}

// decodeTokens runs the decoder; the result may hold invalid UTF-8 from byte-level tokens.
func (t *Tokenizer) decodeTokens(toks []string) string {
	if t.dec == nil {
		return strings.Join(toks, " ")
	}
	return strings.Join(t.dec.decodeChain(toks), "")
}

// DecodeRaw is the tokenizers library's decode: the decoder's output, without transformers' clean-up.
func (t *Tokenizer) DecodeRaw(ids []int, skipSpecial bool) string {
	return lossyUTF8([]byte(t.decodeTokens(t.tokenStrings(ids, skipSpecial))))
}

// Decode turns ids back into text as transformers' decode does: the decoder's output, then (when
// tokenizer_config.json sets clean_up_tokenization_spaces) the removal of spaces before punctuation.
func (t *Tokenizer) Decode(ids []int, skipSpecial bool) string {
	s := t.DecodeRaw(ids, skipSpecial)
	if t.config.CleanUpTokenizationSpaces {
		s = cleanUpTokenization(s)
	}
	return s
}
