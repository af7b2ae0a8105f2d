package tokenizer

import (
	"encoding/json"
	"maps"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/lorakit/lorakit/internal/testenv"
)

// FuzzRoundTrip: for valid UTF-8, decode(encode(text)) == text, and the stream decoder agrees with Decode;
// for any input, nothing panics. Tokenizers: a synthetic byte-level one (any text round-trips), a synthetic
// SentencePiece-style one and stories260K (text without ▁ or special-token strings).
func FuzzRoundTrip(f *testing.F) {
	type tc struct {
		tok       *Tokenizer
		spStyle   bool
		metaspace bool // Metaspace decoding drops a leading space, as in tokenizers
		specials  []string
	}
	cases := []tc{
		{tok: mustParse(f, synthByteLevel(f), "")},
		{tok: mustParse(f, synthSentencePiece(f), ""), spStyle: true, specials: []string{"<s>", "</s>", "<unk>"}},
		{tok: mustParse(f, synthMetaspace(f), ""), spStyle: true, metaspace: true, specials: []string{"<s>", "</s>", "<unk>"}},
	}
	stories, err := Load(filepath.Join(testenv.Testdata(f), "models", "stories260K"))
	if err != nil {
		f.Fatal(err)
	}
	cases = append(cases, tc{tok: stories, spStyle: true, specials: []string{"<s>", "</s>", "<unk>"}})
	for _, s := range []string{"", " ", "Once upon a time", "Hello, y'all! 😁 ?我想在apple工作1314151天～",
		"  two  spaces\n\n\ttab", "<|bos|>x<think>y", "a<s>b</s>", "é́́ café", "\xff\xfe", "12345 'S 'll"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, c := range cases {
			ids := c.tok.Encode(s, true)
			for _, id := range ids {
				if id < 0 || id >= c.tok.VocabSize() {
					t.Fatalf("id %d out of range", id)
				}
			}
			ids = c.tok.Encode(s, false)
			dec := c.tok.Decode(ids, false)
			if got := streamAll(c.tok, ids, false); got != dec {
				t.Fatalf("%q: stream %q, decode %q", s, got, dec)
			}
			// Arbitrary ids (from the input bytes) decode without panic, stream included.
			var raw []int
			for i := 0; i+1 < len(s); i += 2 {
				raw = append(raw, (int(s[i])<<8|int(s[i+1]))%(c.tok.VocabSize()+3)-1)
			}
			if got, want := streamAll(c.tok, raw, true), c.tok.Decode(raw, true); got != want {
				t.Fatalf("raw ids %v: stream %q, decode %q", raw, got, want)
			}
			if !utf8.ValidString(s) {
				continue
			}
			if c.spStyle {
				if strings.Contains(s, "▁") || (c.metaspace && strings.HasPrefix(s, " ")) {
					continue
				}
				skip := false
				for _, sp := range c.specials {
					skip = skip || strings.Contains(s, sp)
				}
				if skip {
					continue
				}
			}
			if dec != s {
				t.Fatalf("round trip %q -> %v -> %q", s, ids, dec)
			}
		}
	})
}

// FuzzScanJSON checks the fast vocab/merges scanner against encoding/json: whatever it accepts, encoding/json
// accepts with the same result.
func FuzzScanJSON(f *testing.F) {
	f.Add([]byte(`{"a":0,"\u2581b":1, "c\"d\\u0041":2}`))
	f.Add([]byte(`["a b","\u00e9 x"]`))
	f.Add([]byte(`[["a","b"],["\ud83d\ude00","c"]]`))
	f.Add([]byte(` { } `))
	f.Fuzz(func(t *testing.T, b []byte) {
		if !utf8.Valid(b) {
			return
		}
		if got, ok := scanVocab(b); ok {
			var want map[string]int
			if err := json.Unmarshal(b, &want); err != nil {
				t.Fatalf("scanVocab accepted %q, encoding/json: %v", b, err)
			}
			if !maps.Equal(got, want) {
				t.Fatalf("%q: scan %v, json %v", b, got, want)
			}
		}
		if got, ok := scanMerges(b); ok {
			var strs []string
			var pairs [][]string
			if err := json.Unmarshal(b, &strs); err == nil {
				for i, s := range strs {
					a, c, _ := strings.Cut(s, " ")
					if got[i] != [2]string{a, c} {
						t.Fatalf("%q: scan %v", b, got)
					}
				}
			} else if err := json.Unmarshal(b, &pairs); err == nil {
				for i, p := range pairs {
					if len(p) != 2 || got[i] != [2]string{p[0], p[1]} {
						t.Fatalf("%q: scan %v", b, got)
					}
				}
			} else {
				t.Fatalf("scanMerges accepted %q, encoding/json: %v", b, err)
			}
		}
	})
}

// FuzzParse: any tokenizer.json / tokenizer_config.json content either fails to load with an error or gives a
// tokenizer that encodes and decodes without panicking.
func FuzzParse(f *testing.F) {
	f.Add(synthByteLevel(f), []byte(`{"bos_token":"<|bos|>"}`))
	f.Add(synthSentencePiece(f), []byte(`{"tokenizer_class":"LlamaTokenizer","add_eos_token":true}`))
	f.Add(synthMetaspace(f), []byte(`{"chat_template":[{"name":"default","template":"x"}]}`))
	f.Add([]byte(`{"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":[["a","b"]]},"decoder":{"type":"Fuse"}}`), []byte(`{}`))
	f.Fuzz(func(t *testing.T, tj, cfg []byte) {
		// On input both accept, the fast scanner must agree with encoding/json. (It may accept slightly
		// malformed JSON that encoding/json rejects; that is harmless.)
		var quick, slow rawTokenizerJSON
		if utf8.Valid(tj) && quickDecode(tj, &quick) && json.Unmarshal(tj, &slow) == nil {
			qv, _ := scanVocab(quick.Model.Vocab)
			sv, _ := scanVocab(slow.Model.Vocab)
			qm, _ := scanMerges(quick.Model.Merges)
			sm, _ := scanMerges(slow.Model.Merges)
			quick.Model.Vocab, slow.Model.Vocab, quick.Model.Merges, slow.Model.Merges = nil, nil, nil, nil
			if !maps.Equal(qv, sv) || !slices.Equal(qm, sm) || !reflect.DeepEqual(quick.Model, slow.Model) ||
				!reflect.DeepEqual(quick.AddedTokens, slow.AddedTokens) {
				t.Fatalf("quickDecode differs from encoding/json")
			}
		}
		tok, err := Parse(tj, cfg)
		if err != nil {
			return
		}
		for _, s := range []string{"", "ab a b", "Hello world 123 <s> <|bos|> 日本 😀\n\n  x"} {
			ids := tok.Encode(s, true)
			tok.Decode(ids, false)
			streamAll(tok, ids, true)
		}
		tok.Decode([]int{-1, 0, 1, 2, 3, tok.VocabSize(), 1 << 40}, false)
		tok.BOS()
		tok.EOS()
	})
}
