package tokenizer

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/lorakit/lorakit/internal/testenv"
)

// TestVariants checks tokenizer.json layouts beyond the six shared families (GPT-2 ByteLevel with prefix
// space, added-token flags, Split behaviours, NFKC/Lowercase/BertNormalizer, Digits/Punctuation, Metaspace
// schemes, normalized added tokens, Gemma-style runs) against ids and decodes produced by the tokenizers
// library 0.23.2 (Node binding) on random text. The files live in testdata/variants.
func TestVariants(t *testing.T) {
	dirs, err := filepath.Glob("testdata/variants/*")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no variants: %v", err)
	}
	type rec struct {
		Text        string `json:"text"`
		IDs         []int  `json:"ids"`
		IDsSpecial  []int  `json:"ids_special"`
		DecodedRaw  string `json:"decoded_raw"`
		DecodedSkip string `json:"decoded_skip"`
	}
	for _, dir := range dirs {
		name := filepath.Base(dir)
		tok, err := Load(dir)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		for _, r := range testenv.ReadJSONL[rec](t, filepath.Join(dir, "cases.jsonl")) {
			if got := tok.Encode(r.Text, false); !slices.Equal(got, r.IDs) {
				t.Errorf("%s %q: ids got %v want %v", name, r.Text, got, r.IDs)
			}
			if got := tok.Encode(r.Text, true); !slices.Equal(got, r.IDsSpecial) {
				t.Errorf("%s %q: with special got %v want %v", name, r.Text, got, r.IDsSpecial)
			}
			if got := tok.DecodeRaw(r.IDs, false); got != r.DecodedRaw {
				t.Errorf("%s %q: decode got %q want %q", name, r.Text, got, r.DecodedRaw)
			}
			if got := tok.DecodeRaw(r.IDsSpecial, true); got != r.DecodedSkip {
				t.Errorf("%s %q: decode skip got %q want %q", name, r.Text, got, r.DecodedSkip)
			}
			if got, want := streamAll(tok, r.IDs, false), tok.Decode(r.IDs, false); got != want {
				t.Errorf("%s %q: stream %q decode %q", name, r.Text, got, want)
			}
		}
	}
}
