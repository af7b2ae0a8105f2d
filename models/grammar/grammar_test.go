package grammar

import (
	"errors"
	"strings"
	"testing"
)

func matches(g *Grammar, v *Vocab, s string) bool {
	m := g.NewMatcher(v)
	return m.AcceptBytes([]byte(s)) && m.CanEnd()
}

func byteVocab() *Vocab {
	toks := make([][]byte, 257)
	for i := range 256 {
		toks[i] = []byte{byte(i)}
	}
	return NewVocab(toks, []int{256})
}

func TestLanguages(t *testing.T) {
	v := byteVocab()
	cases := []struct {
		name     string
		g        func() (*Grammar, error)
		yes, not []string
	}{
		{"object", func() (*Grammar, error) { return JSONObject(), nil },
			[]string{`{}`, `{"a":1}`, `{ "a" : [1, {"b": null}], "c": "x\"y\u00e9" }`, `{"k":-0.5e+3}`},
			[]string{``, `[]`, `{"a"}`, `{"a":01}`, `{"a":1,}`, `{} `, `"x"`, `{"a":"\x"}`}},
		{"schema", func() (*Grammar, error) {
			return JSONSchema([]byte(`{"type":"object","properties":{"name":{"type":"string","maxLength":3},
				"age":{"type":"integer","minimum":18,"maximum":120},"tags":{"type":"array","items":{"enum":["a","b"]},"minItems":1,"maxItems":2},
				"ok":{"type":["boolean","null"]}},"required":["name","age"],"additionalProperties":false}`))
		},
			[]string{`{"name":"bob","age":18}`, `{"name": "", "age": 120, "tags": ["a", "b"], "ok": null}`, `{"name":"x","age":99,"ok":true}`},
			[]string{`{"age":18,"name":"bob"}`, `{"name":"bobby","age":18}`, `{"name":"b","age":17}`, `{"name":"b","age":121}`,
				`{"name":"b","age":20,"tags":[]}`, `{"name":"b","age":20,"tags":["a","a","a"]}`, `{"name":"b"}`}},
		{"ref", func() (*Grammar, error) {
			return JSONSchema([]byte(`{"$defs":{"node":{"type":"object","properties":{"v":{"type":"integer"},"next":{"anyOf":[{"$ref":"#/$defs/node"},{"type":"null"}]}},"required":["v","next"]}},"$ref":"#/$defs/node"}`))
		},
			[]string{`{"v":1,"next":null}`, `{"v":1,"next":{"v":2,"next":null}}`},
			[]string{`{"v":1}`, `{"v":1,"next":{"v":2}}`}},
		{"numbers", func() (*Grammar, error) {
			return JSONSchema([]byte(`{"type":"number","exclusiveMinimum":-2.5,"maximum":3}`))
		},
			[]string{`3`, `-2`, `2.75`, `-1.5`, `0`, `-0.25`},
			[]string{`4`, `3.5`, `-3`, `-2.75`, `1e3`}},
		{"pattern", func() (*Grammar, error) {
			return JSONSchema([]byte(`{"type":"string","pattern":"^[a-z]+\"\\d{2}$"}`))
		},
			[]string{`"ab\"12"`},
			[]string{`"ab"12"`, `"ab\"1"`, `"AB\"12"`}},
		{"format", func() (*Grammar, error) { return JSONSchema([]byte(`{"type":"string","format":"date"}`)) },
			[]string{`"2024-02-28"`}, []string{`"2024-13-01"`}},
		{"regex", func() (*Grammar, error) { return Regex(`(ab|c)+\.é?`) },
			[]string{"ab.", "cab.é"}, []string{"ab", "a.", "ab.é."}},
		{"choice", func() (*Grammar, error) { return Choice([]string{"yes", "no", "yesterday"}) },
			[]string{"yes", "no", "yesterday"}, []string{"ye", "yess", ""}},
		{"framed", func() (*Grammar, error) {
			return JSONSchemaFramed([]byte(`{"type":"object","properties":{"name":{"const":"f"}},"required":["name"]}`),
				Frame{Prefix: "<c>", Suffix: "</c>", Separator: "\n", Min: 1, Max: 2})
		},
			[]string{`<c>{"name":"f"}</c>`, "<c>{\"name\":\"f\"}</c>\n<c>{\"name\":\"f\"}</c>"},
			[]string{`{"name":"f"}`, `<c>{"name":"f"}</c>` + "\n"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g, err := c.g()
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range c.yes {
				if !matches(g, v, s) {
					t.Errorf("rejects %q", s)
				}
			}
			for _, s := range c.not {
				if matches(g, v, s) {
					t.Errorf("accepts %q", s)
				}
			}
		})
	}
}

func TestUnsupportedKeywordsNamed(t *testing.T) {
	for kw, schema := range map[string]string{
		"patternProperties": `{"type":"object","patternProperties":{"a":{}}}`,
		"not":               `{"not":{"type":"string"}}`,
		"uniqueItems":       `{"type":"array","uniqueItems":true}`,
		"$ref":              `{"$ref":"http://example.com/s.json"}`,
		"oneOf":             `{"properties":{"x":{"oneOf":[{"type":"string"}]}}}`,
		"format":            `{"type":"string","format":"iri"}`,
		"pattern":           `{"type":"string","pattern":"(?=a)"}`,
	} {
		_, err := JSONSchema([]byte(schema))
		var ge *Error
		if !errors.As(err, &ge) || ge.Keyword != kw {
			t.Errorf("%s: got %v, want an error naming %s", schema, err, kw)
		}
	}
	if _, err := JSONSchema([]byte(`{"$defs":{"a":{"anyOf":[{"$ref":"#/$defs/a"},{"type":"null"}]}},"$ref":"#/$defs/a"}`)); err == nil || !strings.Contains(err.Error(), "left recursion") {
		t.Errorf("left recursion: got %v", err)
	}
}

// TestMaskMatchesBruteForce checks the trie walk against feeding each token to a fresh matcher.
func TestMaskMatchesBruteForce(t *testing.T) {
	toks := [][]byte{[]byte(`{"`), []byte(`"`), []byte(`a`), []byte(`ab`), []byte(`":`), []byte(` `), []byte(`1`),
		[]byte(`12`), []byte(`}`), []byte(`,"`), []byte(`"}`), []byte(`{`), []byte(`"a`), nil, []byte("\xc3"), []byte("\xa9"), []byte(`true`)}
	eos := len(toks)
	toks = append(toks, nil)
	v := NewVocab(toks, []int{eos})
	g, err := JSONSchema([]byte(`{"type":"object","properties":{"a":{"type":"integer"},"ab":{"type":"string"}},"required":["a"]}`))
	if err != nil {
		t.Fatal(err)
	}
	m := g.NewMatcher(v)
	for _, step := range []string{"", `{"`, `a`, `":`, ` `, `12`, `,"`, `ab`, `":`, `"`, "\xc3", "\xa9", `"}`} {
		if !m.AcceptBytes([]byte(step)) {
			t.Fatalf("rejects %q", step)
		}
		mask := m.Allowed()
		for id := range toks {
			want := false
			if id == eos {
				want = m.CanEnd()
			} else if len(toks[id]) > 0 {
				probe := *m
				want = probe.AcceptBytes(toks[id])
			}
			if got := mask[id/64]&(1<<(id%64)) != 0; got != want {
				t.Errorf("after %q token %q: mask %v, want %v", step, toks[id], got, want)
			}
		}
	}
	if !m.Done() {
		t.Error("a closed object at the root should leave only end-of-sequence")
	}
}
