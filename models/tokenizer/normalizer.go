package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// normalizer rewrites a text segment before pre-tokenisation (tokenizers' "normalizer" section).
type normalizer interface {
	normalize(s string) string
}

type seqNormalizer []normalizer

func (q seqNormalizer) normalize(s string) string {
	for _, n := range q {
		s = n.normalize(s)
	}
	return s
}

type prependNormalizer string

func (p prependNormalizer) normalize(s string) string {
	if s == "" {
		return s
	}
	return string(p) + s
}

type replaceNormalizer struct{ pat *pattern }

func (r replaceNormalizer) normalize(s string) string { return r.pat.replaceAll(s) }

type unicodeNormalizer struct{ form norm.Form }

func (u unicodeNormalizer) normalize(s string) string { return u.form.String(s) }

type lowercaseNormalizer struct{}

func (lowercaseNormalizer) normalize(s string) string { return lowercase(s) }

// lowercase maps every character through Rust's char::to_lowercase (full mapping, no context): like
// strings.ToLower except that İ becomes "i̇" and Σ is always σ.
func lowercase(s string) string {
	return strings.Map(func(r rune) rune { return unicode.ToLower(r) }, strings.ReplaceAll(s, "İ", "i\u0307"))
}

type stripNormalizer struct{ left, right bool }

func (st stripNormalizer) normalize(s string) string {
	if st.left {
		s = strings.TrimLeftFunc(s, unicode.IsSpace)
	}
	if st.right {
		s = strings.TrimRightFunc(s, unicode.IsSpace)
	}
	return s
}

// stripAccentsNormalizer removes combining marks, every M category as tokenizers does (used after NFD).
type stripAccentsNormalizer struct{}

func (stripAccentsNormalizer) normalize(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsMark(r) || (r > 0x1000 && unicode.Is(extraM, r)) {
			return -1
		}
		return r
	}, s)
}

// isOtherCategory is what tokenizers' BertNormalizer treats as control characters: Cc, Cf, Co (and Cs).
// Unassigned code points are kept, as tokenizers does.
func isOtherCategory(r rune) bool {
	return unicode.In(r, unicode.Cc, unicode.Cf, unicode.Co, unicode.Cs)
}

// bertNormalizer is tokenizers' BertNormalizer.
type bertNormalizer struct{ cleanText, chinese, lowercase, stripAccents bool }

func isChineseChar(r rune) bool {
	return (r >= 0x4E00 && r <= 0x9FFF) || (r >= 0x3400 && r <= 0x4DBF) || (r >= 0x20000 && r <= 0x2A6DF) ||
		(r >= 0x2A700 && r <= 0x2B73F) || (r >= 0x2B740 && r <= 0x2B81F) || (r >= 0x2B920 && r <= 0x2CEAF) ||
		(r >= 0xF900 && r <= 0xFAFF) || (r >= 0x2F800 && r <= 0x2FA1F)
}

func (b bertNormalizer) normalize(s string) string {
	var sb strings.Builder
	for _, r := range s {
		if b.cleanText {
			if r == 0 || r == 0xFFFD || (isOtherCategory(r) && r != '\t' && r != '\n' && r != '\r') {
				continue
			}
			if unicode.IsSpace(r) {
				r = ' '
			}
		}
		if b.chinese && isChineseChar(r) {
			sb.WriteByte(' ')
			sb.WriteRune(r)
			sb.WriteByte(' ')
			continue
		}
		sb.WriteRune(r)
	}
	s = sb.String()
	if b.stripAccents { // nonspacing marks only (StripAccents removes every mark)
		s = strings.Map(func(r rune) rune {
			if unicode.Is(unicode.Mn, r) {
				return -1
			}
			return r
		}, norm.NFD.String(s))
	}
	if b.lowercase {
		s = lowercase(s)
	}
	return s
}

type rawComponent struct {
	Type string `json:"type"`
}

// componentType reads the "type" of a tokenizer.json component; ok is false for an absent or null one.
func componentType(raw json.RawMessage) (typ string, ok bool, err error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", false, nil
	}
	var head rawComponent
	if err := json.Unmarshal(raw, &head); err != nil {
		return "", false, err
	}
	return head.Type, true, nil
}

// parseReplace parses a Replace component (normalizer or decoder): a string or regex pattern and its content.
func parseReplace(raw json.RawMessage) (*pattern, error) {
	var v struct {
		Pattern json.RawMessage `json:"pattern"`
		Content string          `json:"content"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	p, err := parsePattern(v.Pattern)
	if err != nil {
		return nil, err
	}
	p.content = v.Content
	return p, nil
}

// parseSequence parses the components listed under key of a "Sequence" component (normalizers, pretokenizers or
// decoders) with parse, dropping null entries; an error names the failing index.
func parseSequence[T comparable](raw json.RawMessage, key string, parse func(json.RawMessage) (T, error)) ([]T, error) {
	var v map[string]json.RawMessage
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	var items []json.RawMessage
	if r, ok := v[key]; ok {
		if err := json.Unmarshal(r, &items); err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
	}
	var zero T
	var seq []T
	for i, r := range items {
		c, err := parse(r)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", key, i, err)
		}
		if c != zero {
			seq = append(seq, c)
		}
	}
	return seq, nil
}

func parseNormalizer(raw json.RawMessage) (normalizer, error) {
	typ, ok, err := componentType(raw)
	if err != nil || !ok {
		return nil, err
	}
	switch typ {
	case "Sequence":
		seq, err := parseSequence(raw, "normalizers", parseNormalizer)
		return seqNormalizer(seq), err
	case "Prepend":
		var v struct {
			Prepend string `json:"prepend"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, err
		}
		return prependNormalizer(v.Prepend), nil
	case "Replace":
		p, err := parseReplace(raw)
		return replaceNormalizer{p}, err
	case "NFC":
		return unicodeNormalizer{norm.NFC}, nil
	case "NFD":
		return unicodeNormalizer{norm.NFD}, nil
	case "NFKC":
		return unicodeNormalizer{norm.NFKC}, nil
	case "NFKD":
		return unicodeNormalizer{norm.NFKD}, nil
	case "Lowercase":
		return lowercaseNormalizer{}, nil
	case "Strip":
		var v struct {
			Left  bool `json:"strip_left"`
			Right bool `json:"strip_right"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, err
		}
		return stripNormalizer{v.Left, v.Right}, nil
	case "StripAccents":
		return stripAccentsNormalizer{}, nil
	case "BertNormalizer":
		v := struct {
			CleanText    bool  `json:"clean_text"`
			Chinese      bool  `json:"handle_chinese_chars"`
			StripAccents *bool `json:"strip_accents"`
			Lowercase    bool  `json:"lowercase"`
		}{CleanText: true, Chinese: true, Lowercase: true}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, err
		}
		strip := v.Lowercase
		if v.StripAccents != nil {
			strip = *v.StripAccents
		}
		return bertNormalizer{v.CleanText, v.Chinese, v.Lowercase, strip}, nil
	}
	return nil, fmt.Errorf("normalizer type %q is not supported", typ)
}
