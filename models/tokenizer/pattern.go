package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/dlclark/regexp2/v2"
)

// matcher finds all non-overlapping matches of a regular expression, as byte offsets, appended to dst.
type matcher interface {
	findAll(s string, dst [][2]int) [][2]int
}

// regexp2Matcher runs a pattern with .NET-style semantics (lookahead, \p{..}, Unicode \s), close to the
// Oniguruma engine the tokenizers library uses.
type regexp2Matcher struct{ re *regexp2.Regexp }

func (m regexp2Matcher) findAll(s string, dst [][2]int) [][2]int {
	idx, err := m.re.FindAllStringIndex(s, -1)
	if err != nil {
		// Only possible on a backtracking limit or timeout, both disabled; treat as no match.
		return dst
	}
	for _, p := range idx {
		if p[1] > p[0] {
			dst = append(dst, [2]int{p[0], p[1]})
		}
	}
	return dst
}

func compileRegex(expr string) (*regexp2.Regexp, error) {
	return regexp2.Compile(widenCategories(expr), regexp2.None, regexp2.OptionMaxBacktrackingStackSize(-1))
}

// pattern is tokenizers' Pattern: {"String": "..."} (literal) or {"Regex": "..."}.
type pattern struct {
	literal string
	isRegex bool
	m       matcher
	content string // replacement (Replace normalizer/decoder)
}

func parsePattern(raw json.RawMessage) (*pattern, error) {
	var v struct {
		String *string `json:"String"`
		Regex  *string `json:"Regex"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("pattern: %w", err)
	}
	switch {
	case v.String != nil:
		return &pattern{literal: *v.String}, nil
	case v.Regex != nil:
		m, err := newMatcher(*v.Regex)
		if err != nil {
			return nil, err
		}
		return &pattern{isRegex: true, literal: *v.Regex, m: m}, nil
	}
	return nil, fmt.Errorf("pattern: want {\"String\": ...} or {\"Regex\": ...}, got %.80s", raw)
}

// newMatcher picks a hand-written matcher for the well-known GPT-2 / Llama-3 / Qwen split patterns and
// regexp2 for anything else.
func newMatcher(expr string) (matcher, error) {
	if m := fastMatcherFor(expr); m != nil {
		return m, nil
	}
	re, err := compileRegex(expr)
	if err != nil {
		return nil, fmt.Errorf("regex %q: %w", expr, err)
	}
	return regexp2Matcher{re}, nil
}

func (p *pattern) findAll(s string, dst [][2]int) [][2]int {
	if p.isRegex {
		return p.m.findAll(s, dst)
	}
	if p.literal == "" {
		return dst
	}
	off := 0
	for {
		i := strings.Index(s[off:], p.literal)
		if i < 0 {
			return dst
		}
		dst = append(dst, [2]int{off + i, off + i + len(p.literal)})
		off += i + len(p.literal)
	}
}

func (p *pattern) replaceAll(s string) string {
	if !p.isRegex {
		if p.literal == "" {
			return s
		}
		return strings.ReplaceAll(s, p.literal, p.content)
	}
	ms := p.findAll(s, nil)
	if len(ms) == 0 {
		return s
	}
	var sb strings.Builder
	prev := 0
	for _, m := range ms {
		sb.WriteString(s[prev:m[0]])
		sb.WriteString(p.content)
		prev = m[1]
	}
	sb.WriteString(s[prev:])
	return sb.String()
}

// splitBehavior is tokenizers' SplitDelimiterBehavior.
type splitBehavior int

const (
	behRemoved splitBehavior = iota
	behIsolated
	behMergedWithPrevious
	behMergedWithNext
	behContiguous
)

func parseBehavior(s string) (splitBehavior, error) {
	switch s {
	case "Removed":
		return behRemoved, nil
	case "Isolated":
		return behIsolated, nil
	case "MergedWithPrevious":
		return behMergedWithPrevious, nil
	case "MergedWithNext":
		return behMergedWithNext, nil
	case "Contiguous":
		return behContiguous, nil
	}
	return 0, fmt.Errorf("split behavior %q is not supported", s)
}

type span struct {
	lo, hi  int
	isMatch bool
}

// splitSpans cuts s into spans following tokenizers' NormalizedString::split; matches are the pattern's
// matches (inverted when invert is set). Empty spans are dropped. Returned spans are appended to dst.
func splitSpans(s string, ms [][2]int, invert bool, beh splitBehavior, dst []span) []span {
	// All pieces, in order, with their match flag.
	var all []span
	prev := 0
	for _, m := range ms {
		if prev != m[0] {
			all = append(all, span{prev, m[0], invert})
		}
		all = append(all, span{m[0], m[1], !invert})
		prev = m[1]
	}
	if prev != len(s) {
		all = append(all, span{prev, len(s), invert})
	}
	var out []span
	switch beh {
	case behIsolated:
		out = all
		for i := range out {
			out[i].isMatch = false
		}
	case behRemoved:
		out = all
	case behContiguous:
		prevMatch := false
		for _, sp := range all {
			if sp.isMatch == prevMatch && len(out) > 0 {
				out[len(out)-1].hi = sp.hi
			} else {
				out = append(out, span{sp.lo, sp.hi, false})
			}
			prevMatch = sp.isMatch
		}
	case behMergedWithPrevious:
		prevMatch := false
		for _, sp := range all {
			if sp.isMatch && !prevMatch && len(out) > 0 {
				out[len(out)-1].hi = sp.hi
			} else {
				out = append(out, span{sp.lo, sp.hi, false})
			}
			prevMatch = sp.isMatch
		}
	case behMergedWithNext:
		prevMatch := false
		for i := len(all) - 1; i >= 0; i-- {
			sp := all[i]
			if sp.isMatch && !prevMatch && len(out) > 0 {
				out[len(out)-1].lo = sp.lo
			} else {
				out = append(out, span{sp.lo, sp.hi, false})
			}
			prevMatch = sp.isMatch
		}
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	}
	for _, sp := range out {
		if sp.isMatch || sp.hi <= sp.lo {
			continue // removed, or empty
		}
		dst = append(dst, sp)
	}
	return dst
}
