package chat

import (
	"encoding/json"
	"strings"
	"testing"
)

func renderSrc(t *testing.T, src, messages string) (string, error) {
	t.Helper()
	tpl, err := New(src, "", "")
	if err != nil {
		t.Fatalf("%q: %v", src, err)
	}
	if messages == "" {
		messages = "[]"
	}
	return tpl.RenderJSON(json.RawMessage(messages), false, nil)
}

// Jinja2 evaluates + and ~ with Python's rules; the expected texts and errors are what Python 3 prints.
func TestPythonPlusAndConcat(t *testing.T) {
	ok := []struct{ src, want string }{
		{`{{ 'a' + 'b' }}`, "ab"},
		{`{{ 1 + 2 }}|{{ 1 + 2.5 }}|{{ true + 1 }}|{{ 0.5 + 0.25 }}`, "3|3.5|2|0.75"},
		{`{{ [1] + [2, 'x'] }}`, "[1, 2, 'x']"},
		{`{{ 'a' ~ none }}|{{ 1 ~ 2.0 }}|{{ 'a' ~ nope }}|{{ none ~ true }}`, "aNone|12.0|a|NoneTrue"},
		{`{{- 'a' + 'b' -}} {{ 'c' + 'd' if true else 'e' + none }}`, "abcd"},
		{`{% set x = 'a' + 'b' %}{% if x + 'c' == 'abc' %}{% for c in ['p'] + ['q'] %}{{ c }}{% endfor %}{% endif %}`, "pq"},
		{`{{ ('a' + 'b') | upper + 'c' }}|{{ 'n=' + 3 | string }}|{{ 'x' ~ 1 ~ 2 }}`, "ABc|n=3|x12"},
		{`{% for m in messages %}{{ '<' + m['role'] + '>' + m.content | trim + '\n' }}{% endfor %}`, "<user>hi\n"},
		{`{{ {'k': 'a' + 'b'}['k'] }}|{{ 'abc'[1:] + 'd' }}|{{ ['a', 'b'] | join(', ') + '!' }}`, "ab|bcd|a, b!"},
	}
	for _, c := range ok {
		got, err := renderSrc(t, c.src, `[{"role":"user","content":" hi "}]`)
		if err != nil || got != c.want {
			t.Errorf("%s: got %q, %v; want %q", c.src, got, err, c.want)
		}
	}
	bad := []struct{ src, want string }{
		{`{{ 'a' + none }}`, `line 1: 'a' + none: TypeError: can only concatenate str (not "NoneType") to str`},
		{`{{ none + 'a' }}`, `TypeError: unsupported operand type(s) for +: 'NoneType' and 'str'`},
		{`{{ 1 + 'a' }}`, `TypeError: unsupported operand type(s) for +: 'int' and 'str'`},
		{`{{ 'a' + 1 }}`, `TypeError: can only concatenate str (not "int") to str`},
		{`{{ [1] + 'a' }}`, `TypeError: can only concatenate list (not "str") to list`},
		{`{{ {} + {} }}`, `unsupported operand type(s) for +: 'dict' and 'dict'`},
		{`{{ 'x' ~ 1 + 2 }}`, `'x' ~ 1 + 2: TypeError: can only concatenate str (not "int") to str`}, // ~ binds tighter
		{`{{ 'a' + nope }}`, `UndefinedError: nope is undefined`},
		{"{% for m in messages %}\n\n{%- set s = '[' + m.content + ']' %}{% endfor %}",
			`line 3: '[' + m.content: TypeError: can only concatenate str (not "NoneType") to str`},
	}
	for _, c := range bad {
		got, err := renderSrc(t, c.src, `[{"role":"assistant","content":null}]`)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "chat template") {
			t.Errorf("%s: got %q, %v; want error %q", c.src, got, err, c.want)
		}
	}
}

func TestFormatFilter(t *testing.T) {
	ok := []struct{ src, want string }{
		{`{{ "%s - %d" | format("a", 3) }}`, "a - 3"},
		{`{{ "%i|%d|%5d|%-4d|%04d|%+d" | format(3.9, -2.5, 42, 7, -5, 1) }}`, "3|-2|   42|7   |-005|+1"},
		{`{{ "%f|%.2f|%8.3f|%.0f|%F" | format(1.5, 2, -3.14159, 2.5, 0.1) }}`, "1.500000|2.00|  -3.142|2|0.100000"},
		{`{{ "%r|%s|%r|%s|%.2s" | format("it's", none, [1, 'a'], true, "abc") }}`, `"it's"|None|[1, 'a']|True|ab`},
		{`{{ "100%%" | format }}|{{ "%x|%X|%#x|%o" | format(255, 255, 255, 8) }}`, "100%|ff|FF|0xff|10"},
		{`{{ "%(name)s is %(age)d" | format(name="Bo", age=3) }}|{{ 'v' ~ "%s" | format(1) }}`, "Bo is 3|v1"},
		{`{{ "%s" | format(1.0) }}|{{ "%s" | format({'a': 1.5}) }}`, "1.0|{'a': 1.5}"},
		{`{{ 1.0 }}|{{ [1.0, "it's", none] }}|{{ {'a': {'b': false} } }}|{{ 2 * 0.5 }}`, `1.0|[1.0, "it's", None]|{'a': {'b': False}}|1.0`},
	}
	for _, c := range ok {
		got, err := renderSrc(t, c.src, "")
		if err != nil || got != c.want {
			t.Errorf("%s: got %q, %v; want %q", c.src, got, err, c.want)
		}
	}
	bad := []struct{ src, want string }{
		{`{{ "%s %s" | format(1) }}`, "not enough arguments for format string"},
		{`{{ "%s" | format(1, 2) }}`, "not all arguments converted during string formatting"},
		{`{{ "%d" | format("x") }}`, "%d format: a real number is required, not str"},
		{`{{ "%x" | format(1.5) }}`, "%x format: an integer is required, not float"},
		{`{{ "%f" | format(none) }}`, "must be real number, not NoneType"},
		{`{{ "%c" | format(65) }}`, "unsupported format character 'c'"},
		{"\n{{ \"%s%s\" | format(1, x=2) }}", `line 2: "%s%s" | format(1, x=2): FilterArgumentError`},
	}
	for _, c := range bad {
		got, err := renderSrc(t, c.src, "")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %q, %v; want error %q", c.src, got, err, c.want)
		}
	}
}

func TestPyFloatRepr(t *testing.T) {
	for f, want := range map[float64]string{1: "1.0", 0.1: "0.1", 1e16: "1e+16", 1.5e-5: "1.5e-05", 123456.5: "123456.5", -0.0001: "-0.0001", 1e15: "1000000000000000.0"} {
		if got := pyFloatRepr(f); got != want {
			t.Errorf("%v: got %q want %q", f, got, want)
		}
	}
}

// Tags the rewriter cannot parse are left as they are (the engine then reports or renders them).
func TestRewriteFallback(t *testing.T) {
	var table []exprInfo
	for _, code := range []string{" 'a' + ", " macro f(x='a' + 'b') ", " a +* b ", " 'unterminated "} {
		isOut := !strings.Contains(code, "macro")
		if got := rewriteExprs(code, isOut, 1, &table, pyFilters); got != code {
			t.Errorf("%q rewritten to %q", code, got)
		}
	}
	if len(table) != 0 {
		t.Errorf("table %v", table)
	}
	if got := rewriteExprs("- x + y -", true, 1, &table, pyFilters); got != "- "+varAdd+"(x, y, 0) -" {
		t.Errorf("got %q", got)
	}
}

// tojson keeps key order (indent included) like transformers' json.dumps; trim and length see None as Python does.
func TestToJSONTrimLength(t *testing.T) {
	ok := []struct{ src, want string }{
		{`{{ {'b': 1, 'a': [1.0, none, 'x<&"']} | tojson }}`, `{"b": 1, "a": [1.0, null, "x<&\""]}`},
		{`{{ {'b': 1, 'a': [], 'c': {} } | tojson(indent=2) }}`, "{\n  \"b\": 1,\n  \"a\": [],\n  \"c\": {}\n}"},
		{`{{ {'b': 1, 'a': 2} | tojson(sort_keys=true, separators=(',', ':')) }}`, `{"a":2,"b":1}`},
		{`{{ none | trim }}|{{ ' x ' | trim }}|{{ 'xxaxx' | trim('x') }}|{{ nope | length }}|{{ 'héé' | length }}|{{ [1, 2] | count }}`, "None|x|a|0|3|2"},
	}
	for _, c := range ok {
		got, err := renderSrc(t, c.src, "")
		if err != nil || got != c.want {
			t.Errorf("%s: got %q, %v; want %q", c.src, got, err, c.want)
		}
	}
	if _, err := renderSrc(t, `{{ none | length }}`, ""); err == nil || !strings.Contains(err.Error(), "object of type 'NoneType' has no len()") {
		t.Errorf("want len(None) error, got %v", err)
	}
}
