package tokenizer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzRoundTrip: for valid UTF-8, decode(encode(text)) == text, and the stream decoder agrees with Decode;
// for any input, nothing panics. Tokenizers: a synthetic byte-level one (any text round-trips), a synthetic
// SentencePiece-style one and, with LORAKIT_SHARED, stories260K (text without ▁ or special-token strings).
func FuzzRoundTrip(f *testing.F) {
	type tc struct {
		tok      *Tokenizer
		spStyle  bool
		specials []string
	}
	cases := []tc{
		{tok: mustParse(f, synthByteLevel(f), "")},
		{tok: mustParse(f, synthSentencePiece(f), ""), spStyle: true, specials: []string{"<s>", "</s>", "<unk>"}},
	}
	if shared := os.Getenv("LORAKIT_SHARED"); shared != "" {
		tok, err := Load(filepath.Join(shared, "models", "stories260K"))
		if err != nil {
			f.Fatal(err)
		}
		cases = append(cases, tc{tok: tok, spStyle: true, specials: []string{"<s>", "</s>", "<unk>"}})
	}
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
				if strings.Contains(s, "▁") {
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
