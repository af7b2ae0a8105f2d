package tokenizer

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/lorakit/lorakit/internal/testenv"
)

// TestPiecesJoinToDecode checks, for every shared tokenizer family and every golden text, that the bytes each
// token contributes join to the decoded text (with and without the BOS), and that a token's bytes after other
// text are what it adds to a decode.
func TestPiecesJoinToDecode(t *testing.T) {
	dir := sharedDir(t)
	for _, fam := range []string{"llama2", "mistral", "llama3", "qwen3", "gemma3", "deepseek_v3"} {
		t.Run(fam, func(t *testing.T) {
			tok, err := loadShared(filepath.Join(dir, "tokenizers", fam))
			if err != nil {
				t.Fatal(err)
			}
			type golden struct {
				ID             string `json:"id"`
				IDs            []int  `json:"ids"`
				IDsWithSpecial []int  `json:"ids_with_special"`
			}
			all := tok.TokenBytes()
			for _, g := range testenv.ReadJSONL[golden](t, filepath.Join(dir, "golden", "tokenizers", fam+".jsonl")) {
				for _, ids := range [][]int{g.IDs, g.IDsWithSpecial} {
					want := tok.DecodeRaw(ids, true)
					if got := lossyUTF8(bytes.Join(tok.Pieces(ids), nil)); got != want {
						t.Errorf("%s: pieces join to %q, DecodeRaw gives %q", g.ID, got, want)
					}
				}
				if len(g.IDs) > 1 {
					// the last token's bytes are what it adds after the rest
					head, last := g.IDs[:len(g.IDs)-1], g.IDs[len(g.IDs)-1]
					whole := tok.decodeTokens(tok.tokenStrings(g.IDs, true))
					prefix := tok.decodeTokens(tok.tokenStrings(head, true))
					if tail, ok := bytes.CutPrefix([]byte(whole), []byte(prefix)); ok && !tok.hasByteFallbackDec && !bytes.Equal(tail, all[last]) {
						t.Errorf("%s: token %d adds %q, TokenBytes says %q", g.ID, last, tail, all[last])
					}
				}
			}
		})
	}
}
