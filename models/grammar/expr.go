// Package grammar constrains generation to a formal language over bytes: a JSON Schema (the subset OpenAI's
// structured outputs document), any JSON object, a regular expression or a list of choices. Each is compiled to
// a recursive transition network (one NFA per rule, rules calling rules: a pushdown automaton), and a Matcher
// walks it byte by byte. The token mask of a state is computed by walking a trie of the vocabulary's token bytes
// against the automaton (pruning a whole subtree at the first byte the state rejects), and is cached per state
// on the grammar, so a state met again, in this request or a later one with the same grammar, costs a lookup.
//
// The package knows nothing of HTTP or of a tokenizer: a Vocab is built from each token's exact bytes.
package grammar

import (
	"fmt"
	"unicode/utf8"
)

// op is an expression operator.
type op uint8

const (
	opEmpty op = iota
	opBytes    // one byte in one of ranges
	opSeq      // subs in order
	opAlt      // one of subs
	opRep      // subs[0] repeated min..max times (max < 0: unbounded)
	opRef      // call rule
)

// expr is a grammar expression: a regular expression over bytes that may call rules.
type expr struct {
	op       op
	ranges   []brange
	subs     []*expr
	min, max int
	rule     int
}

// brange is an inclusive byte range.
type brange struct{ lo, hi byte }

func empty() *expr { return &expr{op: opEmpty} }

func byteRange(lo, hi byte) *expr { return &expr{op: opBytes, ranges: []brange{{lo, hi}}} }

func byteSet(r ...brange) *expr { return &expr{op: opBytes, ranges: r} }

// lit matches s exactly.
func lit(s string) *expr {
	if len(s) == 0 {
		return empty()
	}
	subs := make([]*expr, len(s))
	for i := 0; i < len(s); i++ {
		subs[i] = byteRange(s[i], s[i])
	}
	if len(subs) == 1 {
		return subs[0]
	}
	return &expr{op: opSeq, subs: subs}
}

func seq(subs ...*expr) *expr {
	var out []*expr
	for _, s := range subs {
		switch {
		case s.op == opEmpty:
		case s.op == opSeq:
			out = append(out, s.subs...)
		default:
			out = append(out, s)
		}
	}
	switch len(out) {
	case 0:
		return empty()
	case 1:
		return out[0]
	}
	return &expr{op: opSeq, subs: out}
}

func alt(subs ...*expr) *expr {
	if len(subs) == 1 {
		return subs[0]
	}
	return &expr{op: opAlt, subs: subs}
}

func rep(e *expr, min, max int) *expr { return &expr{op: opRep, subs: []*expr{e}, min: min, max: max} }

func opt(e *expr) *expr { return rep(e, 0, 1) }

func star(e *expr) *expr { return rep(e, 0, -1) }

func ref(rule int) *expr { return &expr{op: opRef, rule: rule} }

// size estimates the NFA nodes an expression compiles to (repetitions counted expanded), to refuse a grammar
// before it is built too large.
func (e *expr) size() int {
	switch e.op {
	case opSeq, opAlt:
		n := 1
		for _, s := range e.subs {
			n += s.size()
		}
		return n
	case opRep:
		k := e.max
		if k < 0 {
			k = e.min + 1
		}
		return 2 + k*e.subs[0].size()
	}
	return 2
}

// runeRange matches the UTF-8 encoding of one code point in [lo, hi] (surrogates excluded).
func runeRange(lo, hi rune) *expr {
	if lo > hi {
		return nil
	}
	// Cut at the encoding-length boundaries and around the surrogates, then split each piece until every
	// continuation byte spans its full range.
	bounds := []rune{0x7F, 0x7FF, 0xD7FF, 0xDFFF, 0xFFFF, utf8.MaxRune}
	var alts []*expr
	for _, b := range bounds {
		if lo > hi {
			break
		}
		if lo > b {
			continue
		}
		h := min(hi, b)
		if !(lo >= 0xD800 && h <= 0xDFFF) {
			alts = append(alts, utf8Seqs(lo, h)...)
		}
		lo = b + 1
	}
	if len(alts) == 0 {
		return nil
	}
	return alt(alts...)
}

// utf8Seqs matches code points in [lo, hi], which have the same encoded length.
func utf8Seqs(lo, hi rune) []*expr {
	n := utf8.RuneLen(lo)
	if n == 1 {
		return []*expr{byteRange(byte(lo), byte(hi))}
	}
	// Split so that all but the first byte cover whole ranges, recursively (the utf8-ranges algorithm).
	for i := 1; i < n; i++ {
		m := rune(1)<<(6*i) - 1
		if lo&^m != hi&^m {
			if lo&m != 0 {
				return append(utf8Seqs(lo, lo|m), utf8Seqs((lo|m)+1, hi)...)
			}
			if hi&m != m {
				return append(utf8Seqs(lo, (hi&^m)-1), utf8Seqs(hi&^m, hi)...)
			}
		}
	}
	var a, b [4]byte
	utf8.EncodeRune(a[:], lo)
	utf8.EncodeRune(b[:], hi)
	parts := make([]*expr, n)
	for i := range n {
		parts[i] = byteRange(a[i], b[i])
	}
	return []*expr{seq(parts...)}
}

// Error is a grammar that cannot be built: Keyword names the JSON Schema keyword (or "pattern", "regex") at
// fault and Path where it is.
type Error struct {
	Keyword, Path, Msg string
}

func (e *Error) Error() string {
	if e.Path != "" {
		return fmt.Sprintf("%s at %s: %s", e.Keyword, e.Path, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Keyword, e.Msg)
}
