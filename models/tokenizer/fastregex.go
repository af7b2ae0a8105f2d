package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// Hand-written matchers for the split patterns of GPT-2, Llama 3 and Qwen 2/3. They give exactly the matches
// of the backtracking regex (checked against regexp2 by TestFastMatchers and FuzzFastMatchers) several times
// faster. Each pattern matches at every position, so matches tile the input.

const (
	llama3Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	qwenPattern   = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// stepper is a matcher whose matches tile the input: next returns the end of the match starting at i.
type stepper interface {
	next(s string, i int) int
}

func fastMatcherFor(expr string) matcher {
	switch expr {
	case gpt2Pattern:
		return gpt2Matcher{}
	case llama3Pattern:
		return llama3Matcher{maxDigits: 3}
	case qwenPattern:
		return llama3Matcher{maxDigits: 1}
	}
	return nil
}

func decodeAt(s string, i int) (rune, int) {
	if i >= len(s) {
		return -1, 0
	}
	if c := s[i]; c < utf8.RuneSelf {
		return rune(c), 1
	}
	return utf8.DecodeRuneInString(s[i:])
}

func isL(r rune) bool {
	if r < utf8.RuneSelf {
		return (r|0x20) >= 'a' && (r|0x20) <= 'z'
	}
	return isLetter16(r)
}

func isN(r rune) bool {
	if r < utf8.RuneSelf {
		return r >= '0' && r <= '9'
	}
	return isNumber16(r)
}

func isS(r rune) bool {
	if r < utf8.RuneSelf {
		return r == ' ' || (r >= '\t' && r <= '\r')
	}
	return unicode.IsSpace(r)
}

// isOther is [^\s\p{L}\p{N}].
func isOther(r rune) bool { return r >= 0 && !isS(r) && !isL(r) && !isN(r) }

// contraction matches 's|'t|'re|'ve|'m|'ll|'d at i (s[i] == '\”), optionally ASCII case-insensitively.
func contraction(s string, i int, fold bool) int {
	if i+1 >= len(s) {
		return 0
	}
	low := func(c byte) byte {
		if fold && c >= 'A' && c <= 'Z' {
			return c + 32
		}
		return c
	}
	switch low(s[i+1]) {
	case 's', 't', 'm', 'd':
		return 2
	case 'r', 'v':
		if i+2 < len(s) && low(s[i+2]) == 'e' {
			return 3
		}
	case 'l':
		if i+2 < len(s) && low(s[i+2]) == 'l' {
			return 3
		}
	}
	return 0
}

// spaceRun returns the end of the run of \s starting at i.
func spaceRun(s string, i int) int {
	for i < len(s) {
		r, n := decodeAt(s, i)
		if !isS(r) {
			break
		}
		i += n
	}
	return i
}

// trailingSpaces handles \s+(?!\S)|\s+ for a whitespace run [i, j): the run minus its last character when a
// non-space follows and the run is longer than one character.
func trailingSpaces(s string, i, j int) int {
	if j == len(s) {
		return j
	}
	_, n := utf8.DecodeLastRuneInString(s[i:j])
	if j-n > i {
		return j - n
	}
	return j
}

type gpt2Matcher struct{}

func (gpt2Matcher) findAll(s string, dst [][2]int) [][2]int {
	for i := 0; i < len(s); {
		e := gpt2Match(s, i)
		dst = append(dst, [2]int{i, e})
		i = e
	}
	return dst
}

func (gpt2Matcher) next(s string, i int) int { return gpt2Match(s, i) }

func gpt2Match(s string, i int) int {
	c, n := decodeAt(s, i)
	if c == '\'' {
		if k := contraction(s, i, false); k > 0 {
			return i + k
		}
	}
	j, r := i, c
	if c == ' ' {
		r, n = decodeAt(s, i+1)
		j = i + 1
	}
	switch {
	case isL(r):
		for j += n; ; j += n {
			if r, n = decodeAt(s, j); !isL(r) {
				return j
			}
		}
	case isN(r):
		for j += n; ; j += n {
			if r, n = decodeAt(s, j); !isN(r) {
				return j
			}
		}
	case isOther(r):
		for j += n; ; j += n {
			if r, n = decodeAt(s, j); !isOther(r) {
				return j
			}
		}
	}
	// c is whitespace here.
	return trailingSpaces(s, i, spaceRun(s, i))
}

type llama3Matcher struct{ maxDigits int }

func (m llama3Matcher) findAll(s string, dst [][2]int) [][2]int {
	for i := 0; i < len(s); {
		e := m.match(s, i)
		dst = append(dst, [2]int{i, e})
		i = e
	}
	return dst
}

func (m llama3Matcher) next(s string, i int) int { return m.match(s, i) }

func (m llama3Matcher) match(s string, i int) int {
	c, n := decodeAt(s, i)
	// (?i:'s|'t|'re|'ve|'m|'ll|'d)
	if c == '\'' {
		if k := contraction(s, i, true); k > 0 {
			return i + k
		}
	}
	// [^\r\n\p{L}\p{N}]?\p{L}+
	if isL(c) {
		j := i + n
		for {
			r, k := decodeAt(s, j)
			if !isL(r) {
				return j
			}
			j += k
		}
	}
	if c != '\r' && c != '\n' && !isN(c) {
		if r, k := decodeAt(s, i+n); isL(r) {
			j := i + n + k
			for {
				r, k := decodeAt(s, j)
				if !isL(r) {
					return j
				}
				j += k
			}
		}
	}
	// \p{N}{1,maxDigits}
	if isN(c) {
		j := i + n
		for d := 1; d < m.maxDigits; d++ {
			r, k := decodeAt(s, j)
			if !isN(r) {
				break
			}
			j += k
		}
		return j
	}
	//  ?[^\s\p{L}\p{N}]+[\r\n]*
	j, r, k := i, c, n
	if c == ' ' {
		r, k = decodeAt(s, i+1)
		j = i + 1
	}
	if isOther(r) {
		for j += k; ; j += k {
			if r, k = decodeAt(s, j); !isOther(r) {
				break
			}
		}
		for j < len(s) && (s[j] == '\r' || s[j] == '\n') {
			j++
		}
		return j
	}
	// c is whitespace. \s*[\r\n]+ : up to the last \r or \n of the run.
	end := spaceRun(s, i)
	for p := end - 1; p >= i; p-- {
		if s[p] == '\r' || s[p] == '\n' {
			return p + 1
		}
	}
	// \s+(?!\S)|\s+
	return trailingSpaces(s, i, end)
}
