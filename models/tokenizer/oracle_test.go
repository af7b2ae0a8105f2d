package tokenizer

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/lorakit/lorakit/internal/testenv"
)

// oracleJS encodes and decodes a list of texts with the tokenizers library's Node binding.
const oracleJS = `
const { Tokenizer } = require(process.env.LORAKIT_TOKENIZERS_NODE_MODULES + '/tokenizers');
const fs = require('fs');
(async () => {
  const [file, textsFile] = process.argv.slice(2);
  const tok = Tokenizer.fromFile(file);
  const out = [];
  for (const t of JSON.parse(fs.readFileSync(textsFile, 'utf8'))) {
    const ids = Array.from((await tok.encode(t, null, { addSpecialTokens: false })).getIds());
    const ids2 = Array.from((await tok.encode(t, null, { addSpecialTokens: true })).getIds());
    out.push({ ids, ids_special: ids2, decoded_raw: await tok.decode(ids, false), decoded_skip: await tok.decode(ids2, true) });
  }
  process.stdout.write(JSON.stringify(out));
})().catch(e => { console.error(e); process.exit(1); });
`

// oracleTexts mixes words, whitespace runs, special-token strings and random code points.
func oracleTexts(r *rand.Rand, n int) []string {
	pieces := []string{"the", " ", "  ", "\n", "\n\n", "\t", "'s", "'S", "'ll", "n't", ".", ",", "!?", "123", "4567890",
		"١٢٣", "日本語", "こんにちは", "한국어", "Привет", "مرحبا", "हिन्दी", "café", "e\u0301", "😀", "👨\u200d👩\u200d👧",
		"\u00a0", "\u3000", "\r\n", "<s>", "</s>", "<|begin_of_text|>", "<|eot_id|>", "<|im_start|>", "<think>", "<bos>",
		"<start_of_turn>", "<unused0>", "<table>", "<｜begin▁of▁sentence｜>", "<｜User｜>", "▁", "▁▁", "<0x0A>", "x",
		"Hello", "World", "foo_bar", "https://example.com/a?b=c", "    code();", "€", "🇺🇸", "ﬁ", "İ", "ß", "\U00013460"}
	out := make([]string, n)
	for i := range out {
		var sb strings.Builder
		if r.IntN(4) == 0 {
			for k := r.IntN(16); k > 0; k-- {
				c := rune(r.IntN(0x30000))
				if c >= 0xD800 && c <= 0xDFFF {
					c = 'a'
				}
				sb.WriteRune(c)
			}
		} else {
			for k := r.IntN(14); k > 0; k-- {
				sb.WriteString(pieces[r.IntN(len(pieces))])
			}
		}
		out[i] = sb.String()
	}
	return out
}

// TestOracleNode compares with the tokenizers library itself on fresh random text, when
// LORAKIT_TOKENIZERS_NODE_MODULES points at a node_modules folder holding the npm package "tokenizers"
// (the Node binding of the Rust library; 0.23.2 was used for the checked-in expectations).
func TestOracleNode(t *testing.T) {
	mods := os.Getenv("LORAKIT_TOKENIZERS_NODE_MODULES")
	if mods == "" {
		t.Skip("LORAKIT_TOKENIZERS_NODE_MODULES not set")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not found")
	}
	tmp := t.TempDir()
	script := filepath.Join(tmp, "oracle.js")
	if err := os.WriteFile(script, []byte(oracleJS), 0o644); err != nil {
		t.Fatal(err)
	}
	texts := oracleTexts(rand.New(rand.NewPCG(uint64(len(mods)), 99)), 300)
	textsFile := filepath.Join(tmp, "texts.json")
	b, _ := json.Marshal(texts)
	if err := os.WriteFile(textsFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	dirs, _ := filepath.Glob("testdata/variants/*")
	if shared := testenv.Shared(); shared != "" {
		for _, f := range families {
			dirs = append(dirs, filepath.Join(shared, "tokenizers", f))
		}
	}
	dirs = append(dirs, filepath.Join(testenv.Testdata(t), "models", "stories260K"))
	for _, dir := range dirs {
		out, err := exec.Command(node, script, filepath.Join(dir, "tokenizer.json"), textsFile).Output()
		if err != nil {
			t.Fatalf("%s: node: %v", dir, err)
		}
		var want []struct {
			IDs         []int  `json:"ids"`
			IDsSpecial  []int  `json:"ids_special"`
			DecodedRaw  string `json:"decoded_raw"`
			DecodedSkip string `json:"decoded_skip"`
		}
		if err := json.Unmarshal(out, &want); err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		tok, err := loadShared(dir)
		if err != nil {
			t.Fatal(err)
		}
		// transformers adds DeepSeek's BOS; the tokenizers library alone does not.
		bosByClass := llamaLikeClass(tok.Config().TokenizerClass)
		bad := 0
		for i, w := range want {
			s := texts[i]
			if strings.Contains(dir, "bertnorm") && strings.ContainsFunc(s, unicode.IsMark) {
				continue // tokenizers' accent stripping uses older mark tables (see the package doc)
			}
			ok := slices.Equal(tok.Encode(s, false), w.IDs) && tok.DecodeRaw(w.IDs, false) == w.DecodedRaw
			if !bosByClass {
				ok = ok && slices.Equal(tok.Encode(s, true), w.IDsSpecial) && tok.DecodeRaw(w.IDsSpecial, true) == w.DecodedSkip
			}
			if !ok {
				bad++
				if bad <= 3 {
					t.Errorf("%s %q: want ids %v, got %v", dir, s, w.IDs, tok.Encode(s, false))
				}
			}
		}
		t.Logf("%s: %d/%d agree", filepath.Base(dir), len(want)-bad, len(want))
	}
}
