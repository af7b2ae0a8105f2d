package chat

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/ardanlabs/jinja"
)

// Template source pre-processing. The Jinja engine differs from Python Jinja2 (what Hugging Face
// transformers renders with) in a few places that chat templates hit; the source is rewritten, inside
// {{ }} and {% %} tags and outside string literals only, so the engine behaves like Python:
//
//   - str.strip()/lstrip()/rstrip() without arguments and the trim filter strip every character Python's
//     str.isspace() accepts (the engine strips a smaller set, e.g. not U+001C..U+001F, and lstrip/rstrip
//     only ASCII blanks): they become .strip(lorakit_ws) / | trim(lorakit_ws).
//   - a backslash-newline inside a string literal is a line continuation in Python (both characters
//     vanish); the engine keeps them, so they are removed.
//   - `for k, v in xs if cond` ignores cond in the engine; it becomes
//     `for lorakit_kv in xs if cond'` + `set k = lorakit_kv[0]` + `set v = lorakit_kv[1]`, cond' using
//     lorakit_kv[0]/[1] (loop.index/last keep Jinja2's filtered meaning).
//   - {{ x }} prints str(x) in Python: "None" for none (the engine prints nothing), "1.0" for 1.0 (the
//     engine "1"), reprs inside lists and dicts: x becomes lorakit_out(x).
//   - `x in y` and `for x in y` with y None raise "argument of type 'NoneType' is not iterable" in
//     Python (the engine answers false / loops zero times): y becomes lorakit_iter(y), which fails on None.
const (
	varWS   = "lorakit_ws"
	varIter = "lorakit_iter"
	varOut  = "lorakit_out"
)

// pyWhitespace is every code point for which Python's str.isspace() is true.
const pyWhitespace = "\t\n\v\f\r\x1c\x1d\x1e\x1f \u0085\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005" +
	"\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"

var (
	reStrip = regexp.MustCompile(`\.(strip|lstrip|rstrip)\(\s*\)`)
	reTrim  = regexp.MustCompile(`\|\s*trim\b`)
	reIn    = regexp.MustCompile(`\bin\s+([A-Za-z_][A-Za-z0-9_]*(?:\s*\.\s*[A-Za-z_][A-Za-z0-9_]*|\[[^\[\]]*\])*)`)
	reParen = regexp.MustCompile(`^\s*\(`)
)

var errNoneIterable = errors.New("argument of type 'NoneType' is not iterable")

// helperVars returns the helper functions the rewritten source calls; table describes the expressions
// rewritten by rewriteExprs, for error messages.
func helperVars(table []exprInfo) map[string]jinja.Value {
	return map[string]jinja.Value{
		varAdd: jinja.NewCallable(varAdd, func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
			if len(args) != 3 {
				return jinja.Undefined(), errors.New(varAdd + ": want three arguments")
			}
			v, err := pyAdd(args[0], args[1])
			if err != nil {
				if errors.Is(err, errUndefined) && args[2].IsInt() && int(args[2].AsInt()) < len(table) {
					e := table[args[2].AsInt()]
					which := e.left
					if !args[0].IsUndefined() {
						which = e.right
					}
					err = fmt.Errorf("UndefinedError: %s is undefined", which)
				}
				return jinja.Undefined(), exprError(table, args[2], err)
			}
			return v, nil
		}),
		varCat: jinja.NewCallable(varCat, func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
			if len(args) != 2 {
				return jinja.Undefined(), errors.New(varCat + ": want two arguments")
			}
			return jinja.NewString(pyStr(args[0]) + pyStr(args[1])), nil
		}),
		varFormat: filterHelper(table, varFormat, pyFormatFilter),
		varToJSON: filterHelper(table, varToJSON, pyToJSONFilter),
		varTrim: filterHelper(table, varTrim, func(v jinja.Value, args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
			return pyTrimFilter(v, args)
		}),
		varLength: filterHelper(table, varLength, func(v jinja.Value, _ []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
			return pyLengthFilter(v)
		}),
		varWS: jinja.NewString(pyWhitespace),
		varOut: jinja.NewCallable(varOut, func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
			if len(args) != 1 {
				return jinja.Undefined(), errors.New(varOut + ": want one argument")
			}
			if v := args[0]; v.IsNone() || v.IsBool() || v.IsFloat() || v.IsList() || v.IsDict() {
				return jinja.NewString(pyStr(v)), nil // Python's str(): 1.0, [1, 'a'], {'k': None}
			}
			return args[0], nil
		}),
		varIter: jinja.NewCallable(varIter, func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
			if len(args) != 1 {
				return jinja.Undefined(), errors.New(varIter + ": want one argument")
			}
			if args[0].IsNone() {
				return jinja.Undefined(), errNoneIterable
			}
			return args[0], nil
		}),
	}
}

// preprocess rewrites template source as described above (and in expr.go); the table describes the
// expressions routed to helpers.
func preprocess(src string) (string, []exprInfo) {
	var b strings.Builder
	var table []exprInfo
	i, line, lineAt := 0, 1, 0
	for i < len(src) {
		open := indexTagOpen(src, i)
		if open < 0 {
			b.WriteString(src[i:])
			break
		}
		b.WriteString(src[i:open])
		closeTok := "}}"
		if src[open+1] == '%' {
			closeTok = "%}"
		}
		if src[open+1] == '#' { // comment: copy as is
			end := strings.Index(src[open+2:], "#}")
			if end < 0 {
				b.WriteString(src[open:])
				break
			}
			b.WriteString(src[open : open+2+end+2])
			i = open + 2 + end + 2
			continue
		}
		end := findTagClose(src, open+2, closeTok)
		if end < 0 {
			b.WriteString(src[open:])
			break
		}
		b.WriteString(src[open : open+2])
		line += strings.Count(src[lineAt:open], "\n")
		lineAt = open
		code := joinContinuations(src[open+2 : end])
		code = rewriteExprs(code, closeTok == "}}", line, &table, pyFilters)
		if closeTok == "%}" {
			code = rewritePairLoop(code)
		}
		code = rewriteCode(code)
		if closeTok == "}}" {
			code = wrapOutput(code)
		}
		b.WriteString(code)
		b.WriteString(closeTok)
		i = end + 2
	}
	return b.String(), table
}

// indexTagOpen finds the next "{{", "{%" or "{#" at or after i.
func indexTagOpen(s string, i int) int {
	for {
		j := strings.IndexByte(s[i:], '{')
		if j < 0 || i+j+1 >= len(s) {
			return -1
		}
		j += i
		if c := s[j+1]; c == '{' || c == '%' || c == '#' {
			return j
		}
		i = j + 1
	}
}

// findTagClose finds closeTok outside string literals, starting at i.
func findTagClose(s string, i int, closeTok string) int {
	for i < len(s) {
		c := s[i]
		if c == '\'' || c == '"' {
			i = skipString(s, i)
			continue
		}
		if strings.HasPrefix(s[i:], closeTok) {
			return i
		}
		i++
	}
	return -1
}

// skipString returns the index just after the string literal starting at i.
func skipString(s string, i int) int {
	q := s[i]
	i++
	for i < len(s) {
		switch s[i] {
		case '\\':
			i += 2
			continue
		case q:
			return i + 1
		}
		i++
	}
	return len(s)
}

// rewriteCode applies the rewrites to the code of one tag; string literals are masked while matching.
func rewriteCode(code string) string {
	type edit struct {
		at, end int
		text    string
	}
	var edits []edit
	m := maskStrings(code)
	for _, loc := range reStrip.FindAllStringSubmatchIndex(m, -1) {
		edits = append(edits, edit{loc[0], loc[1], "." + m[loc[2]:loc[3]] + "(" + varWS + ")"})
	}
	for _, loc := range reTrim.FindAllStringIndex(m, -1) {
		if reParen.MatchString(m[loc[1]:]) {
			continue
		}
		edits = append(edits, edit{loc[0], loc[1], "| trim(" + varWS + ")"})
	}
	for _, loc := range reIn.FindAllStringSubmatchIndex(m, -1) {
		if reParen.MatchString(m[loc[1]:]) {
			continue // a call such as `in x.items()`: leave alone
		}
		path := code[loc[2]:loc[3]]
		edits = append(edits, edit{loc[0], loc[1], "in " + varIter + "(" + path + ")"})
	}
	if len(edits) == 0 {
		return code
	}
	// apply non-overlapping edits in order
	sortEdits := func() {
		for i := 1; i < len(edits); i++ {
			for j := i; j > 0 && edits[j].at < edits[j-1].at; j-- {
				edits[j], edits[j-1] = edits[j-1], edits[j]
			}
		}
	}
	sortEdits()
	var b strings.Builder
	pos := 0
	for _, e := range edits {
		if e.at < pos {
			continue
		}
		b.WriteString(code[pos:e.at])
		b.WriteString(e.text)
		pos = e.end
	}
	b.WriteString(code[pos:])
	return b.String()
}

// joinContinuations removes backslash-newline pairs inside the string literals of one tag's code.
func joinContinuations(code string) string {
	if !strings.Contains(code, "\\\n") {
		return code
	}
	var b strings.Builder
	for i := 0; i < len(code); {
		c := code[i]
		if c != '\'' && c != '"' {
			b.WriteByte(c)
			i++
			continue
		}
		j := skipString(code, i)
		lit := code[i:j]
		for k := 0; k < len(lit); k++ {
			if lit[k] == '\\' && k+1 < len(lit) {
				if lit[k+1] != '\n' {
					b.WriteByte(lit[k])
					b.WriteByte(lit[k+1])
				}
				k++
				continue
			}
			b.WriteByte(lit[k])
		}
		i = j
	}
	return b.String()
}

var (
	rePairLoop = regexp.MustCompile(`^(\s*-?\s*)for\s+([A-Za-z_]\w*)\s*,\s*([A-Za-z_]\w*)\s+in\s+(.+?)\s+if\s+(.+?)(\s*-?\s*)$`)
	reIdent    = regexp.MustCompile(`[A-Za-z_]\w*`)
)

// rewritePairLoop rewrites a filtered two-variable for tag (see preprocess).
func rewritePairLoop(code string) string {
	m := maskStrings(code)
	loc := rePairLoop.FindStringSubmatchIndex(m)
	if loc == nil || strings.Contains(m[loc[8]:loc[9]], " recursive") {
		return code
	}
	k, v := code[loc[4]:loc[5]], code[loc[6]:loc[7]]
	cond, condMasked := code[loc[10]:loc[11]], m[loc[10]:loc[11]]
	var nc strings.Builder
	pos := 0
	for _, id := range reIdent.FindAllStringIndex(condMasked, -1) {
		name := cond[id[0]:id[1]]
		if (name != k && name != v) || (id[0] > 0 && condMasked[id[0]-1] == '.') {
			continue
		}
		nc.WriteString(cond[pos:id[0]])
		if name == k {
			nc.WriteString("lorakit_kv[0]")
		} else {
			nc.WriteString("lorakit_kv[1]")
		}
		pos = id[1]
	}
	nc.WriteString(cond[pos:])
	return code[loc[2]:loc[3]] + "for lorakit_kv in " + code[loc[8]:loc[9]] + " if " + nc.String() +
		" %}{% set " + k + " = lorakit_kv[0] %}{% set " + v + " = lorakit_kv[1] " + code[loc[12]:loc[13]]
}

// maskStrings replaces the inside of string literals with '_' (same length) so patterns ignore them.
func maskStrings(code string) string {
	masked := []byte(code)
	for i := 0; i < len(code); {
		if c := code[i]; c == '\'' || c == '"' {
			j := skipString(code, i)
			for k := i + 1; k < j-1 && k < len(masked); k++ {
				masked[k] = '_'
			}
			i = j
			continue
		}
		i++
	}
	return string(masked)
}

// wrapOutput turns the code of a {{ }} tag into lorakit_out(code), keeping whitespace-control marks.
func wrapOutput(code string) string {
	lo, hi := 0, len(code)
	for lo < hi && (code[lo] == ' ' || code[lo] == '\t' || code[lo] == '\n' || code[lo] == '\r') {
		lo++
	}
	if lo < hi && (code[lo] == '-' || code[lo] == '+') {
		lo++
	}
	for hi > lo && (code[hi-1] == ' ' || code[hi-1] == '\t' || code[hi-1] == '\n' || code[hi-1] == '\r') {
		hi--
	}
	if hi > lo && (code[hi-1] == '-' || code[hi-1] == '+') {
		hi--
	}
	expr := strings.TrimSpace(code[lo:hi])
	if expr == "" {
		return code
	}
	return code[:lo] + " " + varOut + "(" + expr + ") " + code[hi:]
}

// filterHelper wraps a filter implementation called as helper(value, exprID, args...) by the rewritten
// source; errors name the expression.
func filterHelper(table []exprInfo, name string, fn func(jinja.Value, []jinja.Value, map[string]jinja.Value) (jinja.Value, error)) jinja.Value {
	return jinja.NewCallable(name, func(args []jinja.Value, kwargs map[string]jinja.Value) (jinja.Value, error) {
		if len(args) < 2 {
			return jinja.Undefined(), errors.New(name + ": want the value and an expression id")
		}
		v, err := fn(args[0], args[2:], kwargs)
		if err != nil {
			return jinja.Undefined(), exprError(table, args[1], err)
		}
		return v, nil
	})
}
