package chat

import (
	"errors"
	"fmt"
	"strings"
)

// Expression rewriting. The engine evaluates `+` and `~` with its own loose rules ('a' + none gives "a",
// 1 + 'a' gives "1a", 'a' ~ none gives "a") and binds `~` looser than `+` (Jinja2 binds it tighter). The
// code of a tag is parsed with Jinja2's grammar (jinja2/parser.py) and every `a + b` becomes
// lorakit_add(a, b, ID), every `a ~ b` lorakit_cat(a, b), so both follow Python (see pyops.go); ID indexes
// the template's table of expression sources, which error messages quote with their line. Filters the
// engine lacks (`format`) are renamed to helpers the same way. A tag whose code does not parse is left
// as it is.

// exprInfo describes one rewritten expression for error messages.
type exprInfo struct {
	line        int    // 1-based line of the tag in the template source
	src         string // the expression as written
	left, right string // its operands as written
}

// Token kinds of the expression lexer.
const (
	tkEOF = iota
	tkName
	tkString
	tkNumber
	tkOp
)

type token struct {
	kind       int
	val        string // the source text (operators, names, numbers, literals with quotes)
	start, end int    // byte offsets in the code
}

// lexExpr splits tag code into tokens (whitespace dropped; offsets kept).
func lexExpr(code string) ([]token, error) {
	var toks []token
	for i := 0; i < len(code); {
		c := code[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '\'' || c == '"':
			j := skipString(code, i)
			if j > len(code) || j-i < 2 || code[j-1] != c {
				return nil, errors.New("unterminated string")
			}
			toks = append(toks, token{tkString, code[i:j], i, j})
			i = j
		case c >= '0' && c <= '9':
			j := i
			for j < len(code) && (isIdentByte(code[j]) || code[j] == '.' ||
				((code[j] == '+' || code[j] == '-') && (code[j-1] == 'e' || code[j-1] == 'E'))) {
				j++
			}
			toks = append(toks, token{tkNumber, code[i:j], i, j})
			i = j
		case isIdentByte(c):
			j := i
			for j < len(code) && isIdentByte(code[j]) {
				j++
			}
			toks = append(toks, token{tkName, code[i:j], i, j})
			i = j
		default:
			n := 1
			if i+1 < len(code) {
				switch code[i : i+2] {
				case "**", "//", "==", "!=", "<=", ">=":
					n = 2
				}
			}
			if n == 1 && !strings.ContainsRune("+-*/%~<>=|.,:()[]{}", rune(c)) {
				return nil, fmt.Errorf("unexpected character %q", c)
			}
			toks = append(toks, token{tkOp, code[i : i+n], i, i + n})
			i += n
		}
	}
	return append(toks, token{kind: tkEOF, start: len(code), end: len(code)}), nil
}

func isIdentByte(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

// frag is the rewritten text of code[start:end].
type frag struct {
	start, end int
	text       string
}

// exprRewriter parses one tag's code and rewrites it.
type exprRewriter struct {
	code  string
	toks  []token
	pos   int
	line  int
	table *[]exprInfo
	// filters maps a filter name to the helper that replaces it.
	filters map[string]string
}

var errSyntax = errors.New("syntax")

func (p *exprRewriter) peek() token { return p.toks[p.pos] }

func (p *exprRewriter) next() token {
	t := p.toks[p.pos]
	if t.kind != tkEOF {
		p.pos++
	}
	return t
}

func (p *exprRewriter) is(kind int, val string) bool {
	t := p.toks[p.pos]
	return t.kind == kind && t.val == val
}

func (p *exprRewriter) expect(val string) (token, error) {
	t := p.next()
	if t.kind != tkOp || t.val != val {
		return t, fmt.Errorf("%w: want %q at %d, got %q", errSyntax, val, t.start, t.val)
	}
	return t, nil
}

// join returns code[start:end] with the children's ranges replaced by their text (children in order).
func (p *exprRewriter) join(start, end int, children ...frag) frag {
	var b strings.Builder
	pos := start
	for _, c := range children {
		if c.end <= c.start && c.text == "" {
			continue
		}
		b.WriteString(p.code[pos:c.start])
		b.WriteString(c.text)
		pos = c.end
	}
	b.WriteString(p.code[pos:end])
	return frag{start, end, b.String()}
}

// tuple parses expr (',' expr)* [','] (parse_tuple).
func (p *exprRewriter) tuple(condexpr bool, endNames ...string) (frag, error) {
	start := p.peek().start
	var items []frag
	for {
		if len(items) > 0 && p.tupleEnd(endNames) {
			break
		}
		f, err := p.expression(condexpr)
		if err != nil {
			return frag{}, err
		}
		items = append(items, f)
		if !p.is(tkOp, ",") {
			break
		}
		p.next()
	}
	return p.join(start, p.toks[p.pos-1].end, items...), nil
}

func (p *exprRewriter) tupleEnd(endNames []string) bool {
	t := p.peek()
	if t.kind == tkEOF || (t.kind == tkOp && (t.val == ")" || t.val == "]" || t.val == "}")) {
		return true
	}
	for _, n := range endNames {
		if t.kind == tkName && t.val == n {
			return true
		}
	}
	return false
}

func (p *exprRewriter) expression(condexpr bool) (frag, error) {
	if condexpr {
		return p.condexpr()
	}
	return p.or()
}

func (p *exprRewriter) condexpr() (frag, error) {
	e, err := p.or()
	if err != nil {
		return frag{}, err
	}
	for p.is(tkName, "if") {
		p.next()
		c, err := p.or()
		if err != nil {
			return frag{}, err
		}
		parts := []frag{e, c}
		if p.is(tkName, "else") {
			p.next()
			f, err := p.condexpr()
			if err != nil {
				return frag{}, err
			}
			parts = append(parts, f)
		}
		e = p.join(e.start, parts[len(parts)-1].end, parts...)
	}
	return e, nil
}

func (p *exprRewriter) binaryChain(sub func() (frag, error), ops ...string) (frag, error) {
	l, err := sub()
	if err != nil {
		return frag{}, err
	}
	for {
		t := p.peek()
		if !((t.kind == tkOp || t.kind == tkName) && contains(ops, t.val)) {
			return l, nil
		}
		p.next()
		r, err := sub()
		if err != nil {
			return frag{}, err
		}
		switch t.val {
		case "+":
			*p.table = append(*p.table, exprInfo{p.line, p.code[l.start:r.end], p.code[l.start:l.end], p.code[r.start:r.end]})
			l = frag{l.start, r.end, fmt.Sprintf("%s(%s, %s, %d)", varAdd, l.text, r.text, len(*p.table)-1)}
		case "~":
			l = frag{l.start, r.end, fmt.Sprintf("%s(%s, %s)", varCat, l.text, r.text)}
		default:
			l = p.join(l.start, r.end, l, r)
		}
	}
}

func contains(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

func (p *exprRewriter) or() (frag, error)  { return p.binaryChain(p.and, "or") }
func (p *exprRewriter) and() (frag, error) { return p.binaryChain(p.not, "and") }

func (p *exprRewriter) not() (frag, error) {
	if p.is(tkName, "not") {
		start := p.next().start
		e, err := p.not()
		if err != nil {
			return frag{}, err
		}
		return p.join(start, e.end, e), nil
	}
	return p.compare()
}

func (p *exprRewriter) compare() (frag, error) {
	l, err := p.math1()
	if err != nil {
		return frag{}, err
	}
	for {
		t := p.peek()
		switch {
		case t.kind == tkOp && contains([]string{"==", "!=", "<", ">", "<=", ">="}, t.val), t.kind == tkName && t.val == "in":
			p.next()
		case t.kind == tkName && t.val == "not" && p.toks[p.pos+1].kind == tkName && p.toks[p.pos+1].val == "in":
			p.next()
			p.next()
		default:
			return l, nil
		}
		r, err := p.math1()
		if err != nil {
			return frag{}, err
		}
		l = p.join(l.start, r.end, l, r)
	}
}

func (p *exprRewriter) math1() (frag, error) { return p.binaryChain(p.concat, "+", "-") }
func (p *exprRewriter) concat() (frag, error) {
	return p.binaryChain(p.math2, "~")
}
func (p *exprRewriter) math2() (frag, error) { return p.binaryChain(p.pow, "*", "/", "//", "%") }
func (p *exprRewriter) pow() (frag, error) {
	return p.binaryChain(func() (frag, error) { return p.unary(true) }, "**")
}

func (p *exprRewriter) unary(withFilter bool) (frag, error) {
	var e frag
	if p.is(tkOp, "-") || p.is(tkOp, "+") {
		start := p.next().start
		o, err := p.unary(false)
		if err != nil {
			return frag{}, err
		}
		e = p.join(start, o.end, o)
	} else {
		var err error
		if e, err = p.primary(); err != nil {
			return frag{}, err
		}
	}
	e, err := p.postfix(e)
	if err != nil || !withFilter {
		return e, err
	}
	return p.filterExpr(e)
}

func (p *exprRewriter) primary() (frag, error) {
	t := p.next()
	switch t.kind {
	case tkName:
		return frag{t.start, t.end, t.val}, nil
	case tkNumber:
		return frag{t.start, t.end, t.val}, nil
	case tkString:
		end := t.end
		for p.peek().kind == tkString { // adjacent literals concatenate
			end = p.next().end
		}
		return frag{t.start, end, p.code[t.start:end]}, nil
	case tkOp:
		switch t.val {
		case "(":
			if p.is(tkOp, ")") {
				return frag{t.start, p.next().end, "()"}, nil
			}
			in, err := p.tuple(true)
			if err != nil {
				return frag{}, err
			}
			c, err := p.expect(")")
			if err != nil {
				return frag{}, err
			}
			return p.join(t.start, c.end, in), nil
		case "[":
			items, c, err := p.list("]", false)
			if err != nil {
				return frag{}, err
			}
			return p.join(t.start, c.end, items...), nil
		case "{":
			items, c, err := p.list("}", true)
			if err != nil {
				return frag{}, err
			}
			return p.join(t.start, c.end, items...), nil
		}
	}
	return frag{}, fmt.Errorf("%w: unexpected %q at %d", errSyntax, t.val, t.start)
}

// list parses comma-separated expressions (key: value pairs when dict) up to the closing token.
func (p *exprRewriter) list(closing string, dict bool) ([]frag, token, error) {
	var items []frag
	for !p.is(tkOp, closing) {
		if len(items) > 0 {
			if _, err := p.expect(","); err != nil {
				return nil, token{}, err
			}
			if p.is(tkOp, closing) {
				break
			}
		}
		f, err := p.expression(true)
		if err != nil {
			return nil, token{}, err
		}
		items = append(items, f)
		if dict {
			if _, err := p.expect(":"); err != nil {
				return nil, token{}, err
			}
			if f, err = p.expression(true); err != nil {
				return nil, token{}, err
			}
			items = append(items, f)
		}
	}
	c, err := p.expect(closing)
	return items, c, err
}

func (p *exprRewriter) postfix(e frag) (frag, error) {
	for {
		switch {
		case p.is(tkOp, "."):
			p.next()
			t := p.next()
			if t.kind != tkName && t.kind != tkNumber {
				return frag{}, fmt.Errorf("%w: attribute name at %d", errSyntax, t.start)
			}
			e = p.join(e.start, t.end, e)
		case p.is(tkOp, "["):
			p.next()
			var parts []frag
			for !p.is(tkOp, "]") {
				if len(parts) > 0 || p.is(tkOp, ",") {
					if _, err := p.expect(","); err != nil {
						return frag{}, err
					}
				}
				sub, err := p.subscript()
				if err != nil {
					return frag{}, err
				}
				parts = append(parts, sub...)
			}
			c := p.next()
			e = p.join(e.start, c.end, append([]frag{e}, parts...)...)
		case p.is(tkOp, "("):
			args, c, err := p.callArgs()
			if err != nil {
				return frag{}, err
			}
			e = p.join(e.start, c.end, append([]frag{e}, args...)...)
		default:
			return e, nil
		}
	}
}

// subscript parses one item of [...]: an expression or a slice a:b:c.
func (p *exprRewriter) subscript() ([]frag, error) {
	var parts []frag
	bound := func() error {
		if p.is(tkOp, ":") || p.is(tkOp, "]") || p.is(tkOp, ",") {
			return nil
		}
		f, err := p.expression(true)
		if err == nil {
			parts = append(parts, f)
		}
		return err
	}
	if err := bound(); err != nil {
		return nil, err
	}
	for i := 0; i < 2 && p.is(tkOp, ":"); i++ {
		p.next()
		if err := bound(); err != nil {
			return nil, err
		}
	}
	return parts, nil
}

// callArgs parses (args, name=value, *args, **kwargs) starting at "(".
func (p *exprRewriter) callArgs() ([]frag, token, error) {
	p.next() // (
	var args []frag
	for !p.is(tkOp, ")") {
		if len(args) > 0 {
			if _, err := p.expect(","); err != nil {
				return nil, token{}, err
			}
			if p.is(tkOp, ")") {
				break
			}
		}
		if p.is(tkOp, "*") || p.is(tkOp, "**") {
			p.next()
		} else if p.peek().kind == tkName && p.toks[p.pos+1].kind == tkOp && p.toks[p.pos+1].val == "=" {
			p.next()
			p.next()
		}
		f, err := p.expression(true)
		if err != nil {
			return nil, token{}, err
		}
		args = append(args, f)
	}
	return args, p.next(), nil
}

// filterExpr parses the filters, tests and calls that follow a unary expression (parse_filter_expr).
func (p *exprRewriter) filterExpr(e frag) (frag, error) {
	for {
		switch {
		case p.is(tkOp, "|"):
			p.next()
			name := p.next()
			if name.kind != tkName {
				return frag{}, fmt.Errorf("%w: filter name at %d", errSyntax, name.start)
			}
			nameEnd := name.end
			for p.is(tkOp, ".") {
				p.next()
				nameEnd = p.next().end
			}
			children := []frag{e}
			helper, renamed := p.filters[name.val]
			if renamed {
				children = append(children, frag{name.start, nameEnd, helper})
				*p.table = append(*p.table, exprInfo{line: p.line})
			}
			id := len(*p.table) - 1
			end := nameEnd
			if p.is(tkOp, "(") {
				open := p.peek()
				args, c, err := p.callArgs()
				if err != nil {
					return frag{}, err
				}
				if renamed { // the helper's first argument after the value: the expression's ID
					sep := ", "
					if len(args) == 0 {
						sep = ""
					}
					children = append(children, frag{open.end, open.end, fmt.Sprint(id) + sep})
				}
				children = append(children, args...)
				end = c.end
			} else if renamed {
				children = append(children, frag{end, end, fmt.Sprintf("(%d)", id)})
			}
			if renamed {
				(*p.table)[id].src = p.code[e.start:end]
			}
			e = p.join(e.start, end, children...)
		case p.is(tkName, "is"):
			p.next()
			if p.is(tkName, "not") {
				p.next()
			}
			if p.next().kind != tkName {
				return frag{}, fmt.Errorf("%w: test name", errSyntax)
			}
			for p.is(tkOp, ".") {
				p.next()
				p.next()
			}
			end := p.toks[p.pos-1].end
			var children []frag
			t := p.peek()
			switch {
			case p.is(tkOp, "("):
				args, c, err := p.callArgs()
				if err != nil {
					return frag{}, err
				}
				children, end = args, c.end
			case t.kind == tkName && t.val != "else" && t.val != "or" && t.val != "and" && t.val != "if",
				t.kind == tkString, t.kind == tkNumber, p.is(tkOp, "["), p.is(tkOp, "{"):
				a, err := p.primary()
				if err != nil {
					return frag{}, err
				}
				if a, err = p.postfix(a); err != nil {
					return frag{}, err
				}
				children, end = []frag{a}, a.end
			}
			e = p.join(e.start, end, append([]frag{e}, children...)...)
		case p.is(tkOp, "("):
			args, c, err := p.callArgs()
			if err != nil {
				return frag{}, err
			}
			e = p.join(e.start, c.end, append([]frag{e}, args...)...)
		default:
			return e, nil
		}
	}
}

// rewriteExprs rewrites the code of one tag (isOutput for {{ }}). On any parse error the code is returned
// unchanged and the table is left as it was.
func rewriteExprs(code string, isOutput bool, line int, table *[]exprInfo, filters map[string]string) string {
	toks, err := lexExpr(code)
	if err != nil {
		return code
	}
	saved := len(*table)
	p := &exprRewriter{code: code, toks: toks, line: line, table: table, filters: filters}
	// whitespace-control marks ({%- ... -%}) touch the delimiters
	if code != "" && (code[0] == '-' || code[0] == '+') {
		p.next()
	}
	if last := len(toks) - 2; last >= p.pos && toks[last].end == len(code) && (code[len(code)-1] == '-' || code[len(code)-1] == '+') {
		p.toks = append(toks[:last:last], token{kind: tkEOF, start: toks[last].start, end: toks[last].start})
	}
	var parts []frag
	if !p.statement(isOutput, &parts) {
		*table = (*table)[:saved]
		return code
	}
	return p.join(0, len(code), parts...).text
}

// statement parses the expressions of one tag into parts; false when the code does not parse.
func (p *exprRewriter) statement(isOutput bool, parts *[]frag) bool {
	if isOutput {
		if p.peek().kind == tkEOF {
			return true
		}
		f, err := p.tuple(true)
		*parts = append(*parts, f)
		return err == nil && p.peek().kind == tkEOF
	}
	kw := p.next()
	if kw.kind != tkName {
		return false
	}
	switch kw.val {
	case "if", "elif":
		f, err := p.tuple(false)
		*parts = append(*parts, f)
		return err == nil && p.peek().kind == tkEOF
	case "set":
		for p.peek().kind != tkEOF && !p.is(tkOp, "=") {
			p.next()
		}
		if p.peek().kind == tkEOF {
			return true // block set
		}
		p.next()
		f, err := p.tuple(true)
		*parts = append(*parts, f)
		return err == nil && p.peek().kind == tkEOF
	case "for":
		for p.peek().kind != tkEOF && !p.is(tkName, "in") {
			p.next()
		}
		if p.peek().kind == tkEOF {
			return false
		}
		p.next()
		f, err := p.tuple(false, "recursive", "if")
		if err != nil {
			return false
		}
		*parts = append(*parts, f)
		if p.is(tkName, "if") {
			p.next()
			f, err := p.expression(true)
			if err != nil {
				return false
			}
			*parts = append(*parts, f)
		}
		if p.is(tkName, "recursive") {
			p.next()
		}
		return p.peek().kind == tkEOF
	}
	return true // other statements are left alone
}
