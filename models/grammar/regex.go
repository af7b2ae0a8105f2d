package grammar

import (
	"fmt"
	"regexp/syntax"
	"unicode"
	"unicode/utf8"
)

// Regex is the grammar of the texts that match pattern as a whole (vLLM's guided_regex; RE2 syntax, which
// covers ECMAScript's common subset: no lookaround, no backreferences).
func Regex(pattern string) (*Grammar, error) {
	e, err := regexExpr(pattern, false)
	if err != nil {
		return nil, &Error{Keyword: "regex", Msg: err.Error()}
	}
	b := &builder{}
	root := b.rule("root")
	b.define(root, e)
	return b.compile(root)
}

// Choice is the grammar of exactly one of choices (vLLM's guided_choice).
func Choice(choices []string) (*Grammar, error) {
	if len(choices) == 0 {
		return nil, &Error{Keyword: "choice", Msg: "at least one choice is required"}
	}
	alts := make([]*expr, len(choices))
	for i, c := range choices {
		if c == "" {
			return nil, &Error{Keyword: "choice", Msg: fmt.Sprintf("choice %d is empty", i)}
		}
		alts[i] = lit(c)
	}
	b := &builder{}
	root := b.rule("root")
	b.define(root, alt(alts...))
	return b.compile(root)
}

// regexExpr translates pattern. inJSON: the characters matched are written inside a JSON string, so quotes,
// backslashes and control characters are escaped (the pattern constrains the decoded string, as a JSON Schema
// pattern does). Anchors are allowed only at the ends; a pattern is always matched whole (a match of the whole
// also matches an unanchored pattern).
func regexExpr(pattern string, inJSON bool) (*expr, error) {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return nil, fmt.Errorf("%q: %v", pattern, err)
	}
	t := regexTranslator{json: inJSON}
	e, err := t.tr(re, true, true)
	if err != nil {
		return nil, fmt.Errorf("%q: %v", pattern, err)
	}
	return e, nil
}

type regexTranslator struct{ json bool }

// complexity: one case per regexp/syntax operator.
func (t regexTranslator) tr(re *syntax.Regexp, atStart, atEnd bool) (*expr, error) {
	switch re.Op {
	case syntax.OpNoMatch:
		return nil, fmt.Errorf("the pattern matches nothing")
	case syntax.OpEmptyMatch:
		return empty(), nil
	case syntax.OpLiteral:
		parts := make([]*expr, 0, len(re.Rune))
		for _, r := range re.Rune {
			if re.Flags&syntax.FoldCase != 0 {
				var alts []*expr
				for f := r; ; {
					alts = append(alts, t.class([]rune{f, f}))
					if f = unicode.SimpleFold(f); f == r {
						break
					}
				}
				parts = append(parts, alt(alts...))
				continue
			}
			parts = append(parts, t.class([]rune{r, r}))
		}
		return seq(parts...), nil
	case syntax.OpCharClass:
		if len(re.Rune) == 0 {
			return nil, fmt.Errorf("an empty character class matches nothing")
		}
		return t.class(re.Rune), nil
	case syntax.OpAnyCharNotNL:
		return t.class([]rune{0, '\n' - 1, '\n' + 1, utf8.MaxRune}), nil
	case syntax.OpAnyChar:
		return t.class([]rune{0, utf8.MaxRune}), nil
	case syntax.OpBeginLine, syntax.OpBeginText:
		if !atStart {
			return nil, fmt.Errorf("^ is supported only at the start of the pattern")
		}
		return empty(), nil
	case syntax.OpEndLine, syntax.OpEndText:
		if !atEnd {
			return nil, fmt.Errorf("$ is supported only at the end of the pattern")
		}
		return empty(), nil
	case syntax.OpWordBoundary, syntax.OpNoWordBoundary:
		return nil, fmt.Errorf(`word boundaries (\b, \B) are not supported`)
	case syntax.OpCapture:
		return t.tr(re.Sub[0], atStart, atEnd)
	case syntax.OpStar, syntax.OpPlus, syntax.OpQuest, syntax.OpRepeat:
		sub, err := t.tr(re.Sub[0], false, false)
		if err != nil {
			return nil, err
		}
		switch re.Op {
		case syntax.OpStar:
			return star(sub), nil
		case syntax.OpPlus:
			return rep(sub, 1, -1), nil
		case syntax.OpQuest:
			return opt(sub), nil
		}
		return rep(sub, re.Min, re.Max), nil
	case syntax.OpConcat:
		parts := make([]*expr, len(re.Sub))
		for i, s := range re.Sub {
			p, err := t.tr(s, atStart && i == 0, atEnd && i == len(re.Sub)-1)
			if err != nil {
				return nil, err
			}
			parts[i] = p
		}
		return seq(parts...), nil
	case syntax.OpAlternate:
		alts := make([]*expr, len(re.Sub))
		for i, s := range re.Sub {
			a, err := t.tr(s, atStart, atEnd)
			if err != nil {
				return nil, err
			}
			alts[i] = a
		}
		return alt(alts...), nil
	}
	return nil, fmt.Errorf("regular expression operator %v is not supported", re.Op)
}

// class matches one character of the rune ranges (pairs lo, hi), written raw or, in JSON, as a string
// character (escaped where JSON requires).
func (t regexTranslator) class(ranges []rune) *expr {
	var alts []*expr
	for i := 0; i+1 < len(ranges); i += 2 {
		lo, hi := ranges[i], ranges[i+1]
		if !t.json {
			if e := runeRange(lo, hi); e != nil {
				alts = append(alts, e)
			}
			continue
		}
		for _, c := range []rune{'"', '\\'} { // these two are escaped; the rest of the range is written raw
			if lo <= c && c <= hi {
				alts = append(alts, lit(`\`+string(c)))
			}
		}
		for r := lo; r <= min(hi, 0x1F); r++ {
			alts = append(alts, lit(controlEscape(r)))
		}
		raw := []rune{max(lo, 0x20), hi}
		for _, cut := range []rune{'"', '\\'} {
			var next []rune
			for j := 0; j+1 < len(raw); j += 2 {
				a, b := raw[j], raw[j+1]
				if a <= cut && cut <= b {
					next = append(next, a, cut-1, cut+1, b)
				} else {
					next = append(next, a, b)
				}
			}
			raw = next
		}
		for j := 0; j+1 < len(raw); j += 2 {
			if e := runeRange(raw[j], raw[j+1]); e != nil {
				alts = append(alts, e)
			}
		}
	}
	if len(alts) == 0 {
		return &expr{op: opBytes} // matches nothing
	}
	return alt(alts...)
}

func controlEscape(r rune) string {
	switch r {
	case '\n':
		return `\n`
	case '\t':
		return `\t`
	case '\r':
		return `\r`
	case '\b':
		return `\b`
	case '\f':
		return `\f`
	}
	return fmt.Sprintf(`\u%04x`, r)
}

// Frame wraps each JSON value of a framed grammar: Min..Max values (0, 0: exactly one), each written as
// Prefix value Suffix, separated by Separator (tool calls in a chat template's format).
type Frame struct {
	Prefix, Suffix, Separator string
	Min, Max                  int
}

// JSONSchemaFramed is JSONSchema with each value framed by f.
func JSONSchemaFramed(schema []byte, f Frame) (*Grammar, error) {
	dec := newSchemaCompiler(schema)
	if dec.err != nil {
		return nil, dec.err
	}
	c := dec.c
	top := c.rule("root")
	val := c.rule("value")
	e, err := c.schema(c.root, "#")
	if err != nil {
		return nil, err
	}
	c.define(val, e)
	one := seq(lit(f.Prefix), ref(val), lit(f.Suffix))
	lo, hi := max(f.Min, 1), max(f.Max, 1)
	if hi < lo {
		hi = lo
	}
	c.define(top, seq(one, rep(seq(lit(f.Separator), one), lo-1, hi-1)))
	return c.compile(top)
}
