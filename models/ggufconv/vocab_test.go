package ggufconv

import (
	"bytes"
	"io"
	"path/filepath"
	"slices"
	"testing"

	"github.com/lorakit/lorakit/internal/testenv"
	"github.com/lorakit/lorakit/models/gguf"
	"github.com/lorakit/lorakit/models/tokenizer"
)

// roundTripVocab writes the tokenizer metadata of dir into an in-memory GGUF file, reads it back and rebuilds
// a tokenizer from it alone.
func roundTripVocab(t *testing.T, dir string) (*tokenizer.Tokenizer, *gguf.File) {
	t.Helper()
	kvs, err := VocabKV(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := gguf.WriteTo(&buf, kvs, nil, nil); err != nil {
		t.Fatal(err)
	}
	g, err := gguf.Parse(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	tj, cj, err := TokenizerFiles(g)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Parse(tj, cj)
	if err != nil {
		t.Fatal(err)
	}
	return tok, g
}

type goldenTok struct {
	ID             string `json:"id"`
	Text           string `json:"text"`
	IDs            []int  `json:"ids"`
	IDsWithSpecial []int  `json:"ids_with_special"`
	Decoded        string `json:"decoded"`
}

// TestVocabRoundTripGolden: for every tokenizer family in the shared data, the tokenizer rebuilt from the GGUF
// metadata we export encodes the golden strings to the golden ids (with and without special tokens) and
// decodes them back, and written as tokenizer.json (merge and quantize of a GGUF base) it gives back the same
// metadata.
func TestVocabRoundTripGolden(t *testing.T) {
	shared := testenv.Dir(t, "tokenizers")
	for _, fam := range []string{"llama2", "mistral", "llama3", "qwen3", "deepseek_v3", "gemma3"} {
		t.Run(fam, func(t *testing.T) {
			tok, g := roundTripVocab(t, filepath.Join(shared, "tokenizers", fam))
			checkGoldenTok(t, tok, filepath.Join(shared, "golden", "tokenizers", fam+".jsonl"))
			// merge and quantize write these metadata back as tokenizer.json: they must come back identical
			if err := writeTokenizer(g, t.TempDir()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// checkGoldenTok encodes every golden string with and without special tokens.
func checkGoldenTok(t *testing.T, tok *tokenizer.Tokenizer, path string) {
	t.Helper()
	cases := testenv.ReadJSONL[goldenTok](t, path)
	bad := 0
	for _, g := range cases {
		got, gotSp := tok.Encode(g.Text, false), tok.Encode(g.Text, true)
		if !slices.Equal(got, g.IDs) || !slices.Equal(gotSp, g.IDsWithSpecial) {
			if bad++; bad <= 3 {
				t.Errorf("%s %q:\n got %v / %v\nwant %v / %v", g.ID, g.Text, got, gotSp, g.IDs, g.IDsWithSpecial)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d strings differ", bad, len(cases))
	}
}

func TestStoriesVocabKV(t *testing.T) {
	dir := filepath.Join(testenv.Testdata(t), "models", "stories260K")
	kvs, err := VocabKV(dir, 512)
	if err != nil {
		t.Fatal(err)
	}
	get := func(k string) any {
		for _, kv := range kvs {
			if kv.Key == k {
				return kv.Value
			}
		}
		return nil
	}
	if get(keyTokModel) != "llama" || get(keyBOS) != uint32(1) || get(keyEOS) != uint32(2) || get(keyUNK) != uint32(0) ||
		get(keyAddBOS) != true || get(keyAddEOS) != false || get(keySpacePrefix) != true {
		t.Fatalf("metadata: %v", kvs)
	}
	types := get(keyTokenType).([]int32)
	if types[0] != tokUnknown || types[1] != tokControl || types[3] != tokByte || types[300] != tokNormal {
		t.Fatalf("types %v", types[:5])
	}
	_ = io.Discard
}
