package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// piece is one pre-token. When byteLevel is set, s still holds raw text that the BPE model maps through
// the GPT-2 byte-to-unicode table (done lazily so the word cache is keyed by raw text).
type piece struct {
	s         string
	first     bool // starts at offset 0 of the input (Metaspace prepend_scheme "first")
	byteLevel bool
}

// preTokenizer splits a piece further (tokenizers' "pre_tokenizer" section), passing each resulting piece
// to emit in order.
type preTokenizer interface {
	each(p piece, emit func(piece))
}

func materialize(p piece) piece {
	if p.byteLevel {
		p.s = byteLevelEncode(p.s)
		p.byteLevel = false
	}
	return p
}

// splitEach applies a pattern split to one piece.
func splitEach(p piece, pat *pattern, invert bool, beh splitBehavior, byteLevel bool, emit func(piece)) {
	if st, ok := pat.m.(stepper); ok && pat.isRegex && beh == behIsolated && !invert {
		for i := 0; i < len(p.s); {
			e := st.next(p.s, i)
			emit(piece{s: p.s[i:e], first: p.first && i == 0, byteLevel: byteLevel})
			i = e
		}
		return
	}
	ms := pat.findAll(p.s, nil)
	for _, sp := range splitSpans(p.s, ms, invert, beh, nil) {
		emit(piece{s: p.s[sp.lo:sp.hi], first: p.first && sp.lo == 0, byteLevel: byteLevel})
	}
}

type seqPreTokenizer []preTokenizer

func (q seqPreTokenizer) each(p piece, emit func(piece)) {
	switch len(q) {
	case 0:
		emit(p)
	case 1:
		q[0].each(p, emit)
	default:
		rest := q[1:]
		q[0].each(p, func(x piece) { rest.each(x, emit) })
	}
}

type splitPreTokenizer struct {
	pat    *pattern
	beh    splitBehavior
	invert bool
}

func (s splitPreTokenizer) each(p piece, emit func(piece)) {
	splitEach(materialize(p), s.pat, s.invert, s.beh, false, emit)
}

// gpt2Pattern is the split regex of GPT-2's ByteLevel pre-tokenizer (use_regex: true).
const gpt2Pattern = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

type byteLevelPreTokenizer struct {
	addPrefixSpace bool
	re             *pattern // nil unless use_regex
}

func (b byteLevelPreTokenizer) each(p piece, emit func(piece)) {
	p = materialize(p)
	if b.addPrefixSpace && !strings.HasPrefix(p.s, " ") {
		p.s = " " + p.s
	}
	if b.re == nil {
		p.byteLevel = true
		emit(p)
		return
	}
	splitEach(p, b.re, false, behIsolated, true, emit)
}

type metaspacePreTokenizer struct {
	replacement string
	scheme      string // "always", "first", "never"
	split_      bool
}

func (m metaspacePreTokenizer) each(p piece, emit func(piece)) {
	p = materialize(p)
	s := strings.ReplaceAll(p.s, " ", m.replacement)
	if !strings.HasPrefix(s, m.replacement) && (m.scheme == "always" || (m.scheme == "first" && p.first)) {
		s = m.replacement + s
	}
	if !m.split_ {
		emit(piece{s: s, first: p.first})
		return
	}
	splitEach(piece{s: s, first: p.first}, &pattern{literal: m.replacement}, false, behMergedWithNext, false, emit)
}

// funcPreTokenizer splits on single characters chosen by a predicate.
type funcPreTokenizer struct {
	pred func(rune) bool
	beh  splitBehavior
}

func (f funcPreTokenizer) each(p piece, emit func(piece)) {
	p = materialize(p)
	var ms [][2]int
	for i, r := range p.s {
		if f.pred(r) {
			ms = append(ms, [2]int{i, i + utf8.RuneLen(r)})
		}
	}
	for _, sp := range splitSpans(p.s, ms, false, f.beh, nil) {
		emit(piece{s: p.s[sp.lo:sp.hi], first: p.first && sp.lo == 0})
	}
}

func isBertPunct(r rune) bool {
	return (r >= 33 && r <= 47) || (r >= 58 && r <= 64) || (r >= 91 && r <= 96) || (r >= 123 && r <= 126) ||
		isPunct16(r)
}

// complexity: one case per tokenizers pre-tokenizer type.
func parsePreTokenizer(raw json.RawMessage) (preTokenizer, error) {
	typ, ok, err := componentType(raw)
	if err != nil || !ok {
		return nil, err
	}
	switch typ {
	case "Sequence":
		seq, err := parseSequence(raw, "pretokenizers", parsePreTokenizer)
		return seqPreTokenizer(seq), err
	case "Split":
		var v struct {
			Pattern  json.RawMessage `json:"pattern"`
			Behavior string          `json:"behavior"`
			Invert   bool            `json:"invert"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, err
		}
		p, err := parsePattern(v.Pattern)
		if err != nil {
			return nil, err
		}
		beh, err := parseBehavior(v.Behavior)
		if err != nil {
			return nil, err
		}
		return splitPreTokenizer{p, beh, v.Invert}, nil
	case "ByteLevel":
		v := struct {
			AddPrefixSpace bool `json:"add_prefix_space"`
			UseRegex       bool `json:"use_regex"`
		}{UseRegex: true}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, err
		}
		b := byteLevelPreTokenizer{addPrefixSpace: v.AddPrefixSpace}
		if v.UseRegex {
			m, err := newMatcher(gpt2Pattern)
			if err != nil {
				return nil, err
			}
			b.re = &pattern{isRegex: true, literal: gpt2Pattern, m: m}
		}
		return b, nil
	case "Metaspace":
		v := struct {
			Replacement    string `json:"replacement"`
			PrependScheme  string `json:"prepend_scheme"`
			AddPrefixSpace *bool  `json:"add_prefix_space"`
			Split          *bool  `json:"split"`
		}{Replacement: "▁"}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, err
		}
		m := metaspacePreTokenizer{replacement: v.Replacement, scheme: v.PrependScheme, split_: true}
		if v.Split != nil {
			m.split_ = *v.Split
		}
		if m.scheme == "" {
			m.scheme = "always"
			if v.AddPrefixSpace != nil && !*v.AddPrefixSpace {
				m.scheme = "never"
			}
		}
		if m.scheme != "always" && m.scheme != "first" && m.scheme != "never" {
			return nil, fmt.Errorf("pre-tokenizer Metaspace: prepend_scheme %q is not supported", m.scheme)
		}
		return m, nil
	case "Digits":
		var v struct {
			Individual bool `json:"individual_digits"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, err
		}
		beh := behContiguous
		if v.Individual {
			beh = behIsolated
		}
		return funcPreTokenizer{isNumber16, beh}, nil
	case "Punctuation":
		v := struct {
			Behavior string `json:"behavior"`
		}{Behavior: "Isolated"}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, err
		}
		beh, err := parseBehavior(v.Behavior)
		if err != nil {
			return nil, err
		}
		return funcPreTokenizer{isBertPunct, beh}, nil
	case "WhitespaceSplit":
		return funcPreTokenizer{unicode.IsSpace, behRemoved}, nil
	case "Whitespace":
		m, err := newMatcher(`\w+|[^\w\s]+`)
		if err != nil {
			return nil, err
		}
		return splitPreTokenizer{&pattern{isRegex: true, m: m}, behRemoved, true}, nil
	case "BertPreTokenizer":
		return seqPreTokenizer{funcPreTokenizer{unicode.IsSpace, behRemoved}, funcPreTokenizer{isBertPunct, behIsolated}}, nil
	}
	return nil, fmt.Errorf("pre_tokenizer type %q is not supported", typ)
}
