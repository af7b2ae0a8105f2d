package tokenizer

import (
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/text/unicode/norm"

	"github.com/lorakit/lorakit/internal/testenv"
)

// sharedDir returns $LORAKIT_SHARED, skipping the test when unset and failing when set but missing.
func sharedDir(t testing.TB) string {
	t.Helper()
	return testenv.Dir(t, "tokenizers")
}

// sharedToks caches shared tokenizers across tests (a Tokenizer is safe for concurrent use).
var sharedToks = struct {
	sync.Mutex
	m map[string]*Tokenizer
}{m: map[string]*Tokenizer{}}

func loadShared(dir string) (*Tokenizer, error) {
	sharedToks.Lock()
	defer sharedToks.Unlock()
	if tok, ok := sharedToks.m[dir]; ok {
		return tok, nil
	}
	tok, err := Load(dir)
	if err == nil {
		sharedToks.m[dir] = tok
	}
	return tok, err
}

type goldenCase struct {
	ID                 string `json:"id"`
	Text               string `json:"text"`
	IDs                []int  `json:"ids"`
	IDsWithSpecial     []int  `json:"ids_with_special"`
	Decoded            string `json:"decoded"`
	DecodedRaw         string `json:"decoded_raw"`
	DecodedSkipSpecial string `json:"decoded_skip_special"`
}

func streamAll(tok *Tokenizer, ids []int, skip bool) string {
	d := tok.NewStreamDecoder(skip)
	s := ""
	for _, id := range ids {
		s += d.Add(id)
	}
	return s + d.Flush()
}

var families = []string{"llama2", "mistral", "llama3", "qwen3", "gemma3", "deepseek_v3"}

func TestGoldenFamilies(t *testing.T) {
	shared := sharedDir(t)
	for _, fam := range families {
		t.Run(fam, func(t *testing.T) {
			start := time.Now()
			tok, err := loadShared(filepath.Join(shared, "tokenizers", fam))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("load %v", time.Since(start))
			cases := testenv.ReadJSONL[goldenCase](t, filepath.Join(shared, "golden", "tokenizers", fam+".jsonl"))
			pass := 0
			for _, c := range cases {
				ok := true
				if got := tok.Encode(c.Text, false); !slices.Equal(got, c.IDs) {
					t.Errorf("%s %q: ids\n got %v\nwant %v", c.ID, c.Text, got, c.IDs)
					ok = false
				}
				if got := tok.Encode(c.Text, true); !slices.Equal(got, c.IDsWithSpecial) {
					t.Errorf("%s %q: ids_with_special\n got %v\nwant %v", c.ID, c.Text, got, c.IDsWithSpecial)
					ok = false
				}
				if got := tok.Decode(c.IDs, false); got != c.Decoded {
					t.Errorf("%s: decoded\n got %q\nwant %q", c.ID, got, c.Decoded)
					ok = false
				}
				if got := tok.DecodeRaw(c.IDs, false); got != c.DecodedRaw {
					t.Errorf("%s: decoded_raw\n got %q\nwant %q", c.ID, got, c.DecodedRaw)
					ok = false
				}
				if got := tok.Decode(c.IDsWithSpecial, true); got != c.DecodedSkipSpecial {
					t.Errorf("%s: decoded_skip_special\n got %q\nwant %q", c.ID, got, c.DecodedSkipSpecial)
					ok = false
				}
				if got := streamAll(tok, c.IDs, false); got != c.Decoded {
					t.Errorf("%s: stream\n got %q\nwant %q", c.ID, got, c.Decoded)
					ok = false
				}
				if got := streamAll(tok, c.IDsWithSpecial, true); got != c.DecodedSkipSpecial {
					t.Errorf("%s: stream skip special\n got %q\nwant %q", c.ID, got, c.DecodedSkipSpecial)
					ok = false
				}
				if ok {
					pass++
				}
			}
			t.Logf("%s: %d/%d golden cases pass", fam, pass, len(cases))
		})
	}
}

func TestGoldenStories260K(t *testing.T) {
	shared := testenv.Testdata(t)
	tok, err := loadShared(filepath.Join(shared, "models", "stories260K"))
	if err != nil {
		t.Fatal(err)
	}
	type tc struct {
		Text    string `json:"text"`
		IDs     []int  `json:"ids"`
		Decoded string `json:"decoded"`
	}
	cases := testenv.ReadJSONL[tc](t, filepath.Join(shared, "golden", "stories260K-tokenizer.jsonl"))
	pass := 0
	for _, c := range cases {
		ok := true
		if got := tok.Encode(c.Text, false); !slices.Equal(got, c.IDs) {
			t.Errorf("%q: ids\n got %v\nwant %v", c.Text, got, c.IDs)
			ok = false
		}
		if got := tok.Encode(c.Text, true); !slices.Equal(got, append([]int{1}, c.IDs...)) {
			t.Errorf("%q: with BOS got %v", c.Text, got)
			ok = false
		}
		if got := tok.Decode(c.IDs, false); got != c.Decoded {
			t.Errorf("%q: decoded\n got %q\nwant %q", c.Text, got, c.Decoded)
			ok = false
		}
		if got := streamAll(tok, c.IDs, false); got != c.Decoded {
			t.Errorf("%q: stream\n got %q\nwant %q", c.Text, got, c.Decoded)
			ok = false
		}
		if ok {
			pass++
		}
	}
	t.Logf("stories260K: %d/%d golden cases pass", pass, len(cases))
}

func TestMetaSplitEnabled(t *testing.T) {
	shared := sharedDir(t)
	for _, dir := range []string{"tokenizers/llama2", "tokenizers/mistral", "tokenizers/gemma3", "models/stories260K"} {
		tok, err := loadShared(filepath.Join(shared, dir))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: metaSplit=%v", dir, tok.model.metaSplit)
	}
}

// TestRoundTripShared: random text decodes back to itself with every shared tokenizer (NFC form for qwen3;
// for the ▁-prefixing Llama 2 / Mistral, text without ▁ or special-token strings), and streams agree.
func TestRoundTripShared(t *testing.T) {
	shared := sharedDir(t)
	r := rand.New(rand.NewPCG(7, 8))
	for _, fam := range families {
		tok, err := loadShared(filepath.Join(shared, "tokenizers", fam))
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 200; i++ {
			s := randomTricky(r, r.IntN(40))
			if fam == "llama2" || fam == "mistral" {
				s = strings.NewReplacer("▁", "", "<s>", "", "</s>", "", "<unk>", "").Replace(s)
			}
			want := s
			if fam == "qwen3" {
				want = norm.NFC.String(s)
			}
			ids := tok.Encode(s, false)
			if got := tok.DecodeRaw(ids, false); got != want {
				t.Fatalf("%s: %q -> %v -> %q", fam, s, ids, got)
			}
			if got, dec := streamAll(tok, ids, false), tok.Decode(ids, false); got != dec {
				t.Fatalf("%s: %q stream %q decode %q", fam, s, got, dec)
			}
			// Random ids (any token, special or byte piece) stream exactly like Decode.
			raw := make([]int, r.IntN(12))
			for k := range raw {
				if r.IntN(3) == 0 && len(ids) > 0 {
					raw[k] = ids[r.IntN(len(ids))]
				} else {
					raw[k] = r.IntN(tok.VocabSize())
				}
			}
			for _, skip := range []bool{false, true} {
				if got, dec := streamAll(tok, raw, skip), tok.Decode(raw, skip); got != dec {
					t.Fatalf("%s: ids %v skip=%v: stream %q decode %q", fam, raw, skip, got, dec)
				}
			}
		}
	}
}

// TestOracleRegressions holds cases found by comparing with the tokenizers library (0.23.2) on random text.
func TestOracleRegressions(t *testing.T) {
	shared := sharedDir(t)
	for _, c := range []struct {
		fam, text string
		ids       []int
	}{
		// " " + a Unicode 16 letter is one piece for tokenizers' Oniguruma.
		{"deepseek_v3", "=zZ|\U000befc5 \U00014287\r. \t@", []int{31, 92, 60, 94, 177, 125, 126, 230, 86387, 245, 235, 232, 204, 16, 223, 200, 34}},
	} {
		tok, err := loadShared(filepath.Join(shared, "tokenizers", c.fam))
		if err != nil {
			t.Fatal(err)
		}
		if got := tok.Encode(c.text, false); !slices.Equal(got, c.ids) {
			t.Errorf("%s %q: got %v want %v", c.fam, c.text, got, c.ids)
		}
	}
}
