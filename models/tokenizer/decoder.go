package tokenizer

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// decoder turns token strings back into text pieces (tokenizers' decode_chain). Pieces may hold invalid
// UTF-8 bytes (from ByteLevel); Decode repairs them at the very end as from_utf8_lossy does.
type decoder interface {
	decodeChain(toks []string) []string
}

type seqDecoder []decoder

func (q seqDecoder) decodeChain(toks []string) []string {
	for _, d := range q {
		toks = d.decodeChain(toks)
	}
	return toks
}

type byteLevelDecoder struct{}

func (byteLevelDecoder) decodeChain(toks []string) []string {
	var b []byte
	for _, t := range toks {
		b = byteLevelDecodeToken(b, t)
	}
	return []string{string(b)}
}

type replaceDecoder struct{ pat *pattern }

func (r replaceDecoder) decodeChain(toks []string) []string {
	for i, t := range toks {
		toks[i] = r.pat.replaceAll(t)
	}
	return toks
}

// byteFallbackToken parses "<0xNN>".
func byteFallbackToken(t string) (byte, bool) {
	if len(t) != 6 || !strings.HasPrefix(t, "<0x") || t[5] != '>' {
		return 0, false
	}
	v, err := strconv.ParseUint(t[3:5], 16, 8)
	if err != nil {
		return 0, false
	}
	return byte(v), true
}

type byteFallbackDecoder struct{}

func (byteFallbackDecoder) decodeChain(toks []string) []string {
	out := toks[:0:0]
	var pending []byte
	flush := func() {
		if len(pending) == 0 {
			return
		}
		if utf8.Valid(pending) {
			out = append(out, string(pending))
		} else {
			for range pending {
				out = append(out, "\uFFFD")
			}
		}
		pending = pending[:0]
	}
	for _, t := range toks {
		if b, ok := byteFallbackToken(t); ok {
			pending = append(pending, b)
			continue
		}
		flush()
		out = append(out, t)
	}
	flush()
	return out
}

type fuseDecoder struct{}

func (fuseDecoder) decodeChain(toks []string) []string { return []string{strings.Join(toks, "")} }

type stripDecoder struct {
	content     rune
	start, stop int
}

func (s stripDecoder) decodeChain(toks []string) []string {
	for i, t := range toks {
		for k := 0; k < s.start; k++ {
			r, sz := utf8.DecodeRuneInString(t)
			if sz == 0 || r != s.content {
				break
			}
			t = t[sz:]
		}
		for k := 0; k < s.stop; k++ {
			r, sz := utf8.DecodeLastRuneInString(t)
			if sz == 0 || r != s.content {
				break
			}
			t = t[:len(t)-sz]
		}
		toks[i] = t
	}
	return toks
}

type metaspaceDecoder struct {
	replacement rune
	stripFirst  bool // prepend_scheme is not "never"
}

func (m metaspaceDecoder) decodeChain(toks []string) []string {
	for i, t := range toks {
		var sb strings.Builder
		for _, r := range t {
			if r == m.replacement {
				if i == 0 && m.stripFirst {
					continue
				}
				r = ' '
			}
			sb.WriteRune(r)
		}
		toks[i] = sb.String()
	}
	return toks
}

type wordPieceDecoder struct{ prefix string }

func (w wordPieceDecoder) decodeChain(toks []string) []string {
	for i, t := range toks {
		if i > 0 {
			if strings.HasPrefix(t, w.prefix) {
				t = t[len(w.prefix):]
			} else {
				t = " " + t
			}
		}
		toks[i] = t
	}
	return toks
}

type bpeSuffixDecoder struct{ suffix string }

func (b bpeSuffixDecoder) decodeChain(toks []string) []string {
	for i, t := range toks {
		rep := " "
		if i == len(toks)-1 {
			rep = ""
		}
		toks[i] = strings.ReplaceAll(t, b.suffix, rep)
	}
	return toks
}

func parseDecoder(raw json.RawMessage) (decoder, error) {
	typ, ok, err := componentType(raw)
	if err != nil || !ok {
		return nil, err
	}
	switch typ {
	case "Sequence":
		seq, err := parseSequence(raw, "decoders", parseDecoder)
		return seqDecoder(seq), err
	case "ByteLevel":
		return byteLevelDecoder{}, nil
	case "Replace":
		p, err := parseReplace(raw)
		return replaceDecoder{p}, err
	case "ByteFallback":
		return byteFallbackDecoder{}, nil
	case "Fuse":
		return fuseDecoder{}, nil
	case "Strip":
		var v struct {
			Content string `json:"content"`
			Start   int    `json:"start"`
			Stop    int    `json:"stop"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, err
		}
		r, sz := utf8.DecodeRuneInString(v.Content)
		if sz == 0 || sz != len(v.Content) {
			return nil, fmt.Errorf("decoder Strip: content %q must be one character", v.Content)
		}
		return stripDecoder{r, v.Start, v.Stop}, nil
	case "Metaspace":
		v := struct {
			Replacement    string `json:"replacement"`
			PrependScheme  string `json:"prepend_scheme"`
			AddPrefixSpace *bool  `json:"add_prefix_space"`
		}{Replacement: "▁"}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, err
		}
		r, _ := utf8.DecodeRuneInString(v.Replacement)
		strip := v.PrependScheme != "never"
		if v.PrependScheme == "" && v.AddPrefixSpace != nil {
			strip = *v.AddPrefixSpace
		}
		return metaspaceDecoder{r, strip}, nil
	case "WordPiece":
		v := struct {
			Prefix string `json:"prefix"`
		}{Prefix: "##"}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, err
		}
		return wordPieceDecoder{v.Prefix}, nil
	case "BPEDecoder":
		v := struct {
			Suffix string `json:"suffix"`
		}{Suffix: "</w>"}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, err
		}
		return bpeSuffixDecoder{v.Suffix}, nil
	}
	return nil, fmt.Errorf("decoder type %q is not supported", typ)
}

// cleanUpTokenization is transformers' clean_up_tokenization.
func cleanUpTokenization(s string) string {
	if !strings.Contains(s, " ") {
		return s
	}
	for _, r := range [...][2]string{{" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"},
		{" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}} {
		s = strings.ReplaceAll(s, r[0], r[1])
	}
	return s
}

// cleanUpSafe reports whether text may be cut after byte c: no clean-up pattern can span such a cut.
func cleanUpSafe(c byte) bool {
	switch c {
	case ' ', '.', '?', '!', ',', '\'', 'n', 't', 'm', 's', 'v', 'e', 'r':
		return false
	}
	return true
}
