package grammar

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/lorakit/lorakit/models/grammar/grammartest"
)

// walkVocab is every byte plus multi-byte tokens that cross JSON's structure (closing a string and opening a
// key in one token, UTF-8 sequences, literals).
func walkVocab() (*Vocab, int) {
	var toks [][]byte
	for i := range 256 {
		toks = append(toks, []byte{byte(i)})
	}
	for _, s := range []string{`{"`, `":`, `",`, `"}`, `","`, `": "`, `true`, `null`, `12`, `-0`, `.5`, `e+`, `ü`, `é"`,
		`\"`, `\n`, `\u00`, `"]`, `},{`, `[{"`, `id`, `name`, `0:`, `-1`, `20`, `T1`, `:0`, `@a.`, "ab\"", `c\"d`} {
		toks = append(toks, []byte(s))
	}
	eos := len(toks)
	return NewVocab(append(toks, nil), []int{eos}), eos
}

// TestRandomWalksValidate draws tokens uniformly from each mask (the hardest sampler: it never prefers a
// sensible token) and checks every finished text against its schema with an independent validator.
func TestRandomWalksValidate(t *testing.T) {
	schemas, seeds := 60, 3
	if n, err := strconv.Atoi(os.Getenv("LORAKIT_GRAMMAR_SCHEMAS")); err == nil && n > 0 {
		schemas, seeds = n, 10
	}
	v, eos := walkVocab()
	r := rand.New(rand.NewPCG(1, 2))
	for i := range schemas {
		src := grammartest.RandomSchema(r)
		g, err := JSONSchema(src)
		if err != nil {
			t.Fatalf("schema %s: %v", src, err)
		}
		sch := compileValidator(t, src)
		for seed := range seeds {
			rr := rand.New(rand.NewPCG(uint64(i), uint64(seed)))
			m := g.NewMatcher(v)
			var out []byte
			ended := false
			for step := 0; step < 4000 && !ended; step++ {
				mask := m.Allowed()
				var allowed []int
				for id := range v.Size() {
					if mask[id/64]&(1<<(id%64)) != 0 {
						allowed = append(allowed, id)
					}
				}
				if len(allowed) == 0 {
					t.Fatalf("schema %s: no token allowed after %q", src, out)
				}
				id := allowed[rr.IntN(len(allowed))]
				if id == eos {
					ended = true
					break
				}
				if !m.AcceptToken(id) {
					t.Fatalf("schema %s: masked-in token %q refused after %q", src, v.bytes(id), out)
				}
				out = append(out, v.bytes(id)...)
				if m.Done() {
					ended = true
				}
			}
			if !ended {
				t.Errorf("schema %s: no end after 4000 tokens: %q", src, out)
				continue
			}
			inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(out))
			if err != nil {
				t.Errorf("schema %s: output %q is not JSON: %v", src, out, err)
				continue
			}
			if err := sch.Validate(inst); err != nil {
				t.Errorf("schema %s: output %q does not validate: %v", src, out, err)
			}
		}
	}
}

func compileValidator(t *testing.T, src []byte) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	url := fmt.Sprintf("mem://schema%p.json", src)
	if err := c.AddResource(url, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(url)
	if err != nil {
		t.Fatalf("validator rejects schema %s: %v", src, err)
	}
	return s
}
