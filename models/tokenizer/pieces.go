package tokenizer

import (
	"strings"
	"sync"
)

// pieceTable holds TokenBytes once computed.
type pieceTable struct {
	once  sync.Once
	bytes [][]byte
}

// TokenBytes returns, for every id, the exact bytes the token adds to the decoded text (DecodeRaw, before
// transformers' clean-up) when it follows other text: a SentencePiece "▁" is a space, a byte-fallback token is
// its byte, a byte-level token its bytes (possibly part of a UTF-8 character). Special tokens, which Decode
// skips, have no bytes. Computed once; the result is shared and must not be modified.
func (t *Tokenizer) TokenBytes() [][]byte {
	t.pieces.once.Do(func() { t.pieces.bytes = t.tokenBytes() })
	return t.pieces.bytes
}

func (t *Tokenizer) tokenBytes() [][]byte {
	out := make([][]byte, len(t.tokens))
	ctx, ctxText := t.contextToken()
	for id, tok := range t.tokens {
		if t.IsSpecial(id) {
			continue
		}
		if _, ok := t.added[id]; !ok && tok == "" {
			continue // hole in the vocabulary
		}
		if t.hasByteFallbackDec {
			if b, ok := byteFallbackToken(tok); ok {
				out[id] = []byte{b}
				continue
			}
		}
		if ctx == "" {
			out[id] = []byte(t.decodeTokens([]string{tok}))
			continue
		}
		// Decoded after a plain token, so that first-token rules (Strip, Metaspace's prefix) do not apply.
		s := t.decodeTokens([]string{ctx, tok})
		if strings.HasPrefix(s, ctxText) {
			out[id] = []byte(s[len(ctxText):])
		} else {
			out[id] = []byte(t.decodeTokens([]string{tok}))
		}
	}
	return out
}

// contextToken finds a vocabulary token that decodes to one ASCII letter both alone and twice in a row.
func (t *Tokenizer) contextToken() (tok, text string) {
	for _, c := range []string{"a", "e", "t", "x"} {
		for _, cand := range []string{c, "Ġ" + c, "▁" + c} {
			id, ok := t.TokenID(cand)
			if !ok || t.IsSpecial(id) {
				continue
			}
			alone := t.decodeTokens([]string{cand})
			if strings.TrimSpace(alone) == c && t.decodeTokens([]string{cand, cand}) == alone+alone {
				return cand, alone
			}
		}
	}
	return "", ""
}

// Pieces returns the bytes each id contributes to DecodeRaw(ids, true): the first token that produces text
// decodes as it does at the start of a text (a leading space stripped where the decoder strips it), the others
// as TokenBytes. Their concatenation is DecodeRaw's output before invalid UTF-8 is replaced.
func (t *Tokenizer) Pieces(ids []int) [][]byte {
	all := t.TokenBytes()
	out := make([][]byte, len(ids))
	first := true
	for i, id := range ids {
		if id < 0 || id >= len(all) || len(all[id]) == 0 {
			continue
		}
		b := all[id]
		if first {
			first = false
			tok := t.tokens[id]
			_, isByte := byteFallbackToken(tok)
			if !(t.hasByteFallbackDec && isByte) || t.decodeTokens([]string{tok}) == "" {
				b = []byte(t.decodeTokens([]string{tok}))
			}
		}
		out[i] = b
	}
	return out
}
