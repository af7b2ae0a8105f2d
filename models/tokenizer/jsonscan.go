package tokenizer

import (
	"bytes"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// A small JSON scanner for the two big parts of tokenizer.json (model.vocab and model.merges), several times
// faster than encoding/json on Gemma-sized files. Any surprise makes it report !ok, and the caller falls
// back to encoding/json, which then produces the error message.

type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) peek() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) eat(c byte) bool {
	if s.peek() == c {
		s.i++
		return true
	}
	return false
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	v, err := strconv.ParseUint(string(b[:4]), 16, 32)
	return rune(v), err == nil
}

// str reads a JSON string.
func (s *scanner) str() (string, bool) {
	if !s.eat('"') {
		return "", false
	}
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		if c == '"' {
			out := string(s.b[start:s.i])
			s.i++
			return out, true
		}
		if c == '\\' {
			break
		}
		if c < 0x20 {
			return "", false
		}
		s.i++
	}
	buf := append([]byte(nil), s.b[start:s.i]...)
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			if !utf8.Valid(buf) {
				return "", false
			}
			return string(buf), true
		case c < 0x20:
			return "", false
		case c != '\\':
			buf = append(buf, c)
			s.i++
			continue
		}
		if s.i+1 >= len(s.b) {
			return "", false
		}
		e := s.b[s.i+1]
		s.i += 2
		switch e {
		case '"', '\\', '/':
			buf = append(buf, e)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, ok := hex4(s.b[s.i:])
			if !ok {
				return "", false
			}
			s.i += 4
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if s.i+1 < len(s.b) && s.b[s.i] == '\\' && s.b[s.i+1] == 'u' {
					if v, ok := hex4(s.b[s.i+2:]); ok {
						r2 = v
					}
				}
				if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
					r = d
					s.i += 6
				} else {
					r = utf8.RuneError
				}
			}
			buf = utf8.AppendRune(buf, r)
		default:
			return "", false
		}
	}
	return "", false
}

func (s *scanner) integer() (int, bool) {
	s.ws()
	start := s.i
	if s.i < len(s.b) && s.b[s.i] == '-' {
		s.i++
	}
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
	digits := s.b[start:s.i]
	if len(digits) > 0 && digits[0] == '-' {
		digits = digits[1:]
	}
	if len(digits) == 0 || len(digits) > 10 || (len(digits) > 1 && digits[0] == '0') {
		return 0, false // JSON has no leading zeros; ids are small
	}
	v, err := strconv.Atoi(string(s.b[start:s.i]))
	return v, err == nil
}

func (s *scanner) end() bool {
	s.ws()
	return s.i == len(s.b)
}

// scanVocab parses {"token": id, ...}.
func scanVocab(b []byte) (map[string]int, bool) {
	s := &scanner{b: b}
	m := make(map[string]int, bytes.Count(b, []byte(":")))
	if !s.eat('{') {
		return nil, false
	}
	if s.eat('}') {
		return m, s.end()
	}
	for {
		k, ok := s.str()
		if !ok || !s.eat(':') {
			return nil, false
		}
		v, ok := s.integer()
		if !ok {
			return nil, false
		}
		m[k] = v
		if s.eat(',') {
			continue
		}
		if s.eat('}') {
			return m, s.end()
		}
		return nil, false
	}
}

// scanMerges parses ["a b", ...] or [["a","b"], ...].
func scanMerges(b []byte) ([][2]string, bool) {
	s := &scanner{b: b}
	if !s.eat('[') {
		return nil, false
	}
	out := make([][2]string, 0, bytes.Count(b, []byte(","))/2+1)
	if s.eat(']') {
		return out, s.end()
	}
	for {
		var pair [2]string
		if s.peek() == '"' {
			m, ok := s.str()
			if !ok {
				return nil, false
			}
			a, c, found := cutSpace(m)
			if !found {
				return nil, false
			}
			pair = [2]string{a, c}
		} else {
			var ok1, ok2 bool
			if !s.eat('[') {
				return nil, false
			}
			pair[0], ok1 = s.str()
			if !ok1 || !s.eat(',') {
				return nil, false
			}
			pair[1], ok2 = s.str()
			if !ok2 || !s.eat(']') {
				return nil, false
			}
		}
		out = append(out, pair)
		if s.eat(',') {
			continue
		}
		if s.eat(']') {
			return out, s.end()
		}
		return nil, false
	}
}

func cutSpace(m string) (string, string, bool) {
	for i := 0; i < len(m); i++ {
		if m[i] == ' ' {
			return m[:i], m[i+1:], true
		}
	}
	return "", "", false
}

func (s *scanner) skipString() bool {
	if !s.eat('"') {
		return false
	}
	for {
		j := bytes.IndexByte(s.b[s.i:], '"')
		if j < 0 {
			return false
		}
		k := s.i + j
		n := 0
		for p := k - 1; p >= s.i && s.b[p] == '\\'; p-- {
			n++
		}
		s.i = k + 1
		if n%2 == 0 {
			return true
		}
	}
}

// skipValue moves past one JSON value (without validating it in detail).
func (s *scanner) skipValue(depth int) bool {
	if depth > 512 {
		return false
	}
	switch s.peek() {
	case '"':
		return s.skipString()
	case '{':
		s.i++
		if s.eat('}') {
			return true
		}
		for {
			if !s.skipString() || !s.eat(':') || !s.skipValue(depth+1) {
				return false
			}
			if s.eat(',') {
				continue
			}
			return s.eat('}')
		}
	case '[':
		s.i++
		if s.eat(']') {
			return true
		}
		for {
			if !s.skipValue(depth + 1) {
				return false
			}
			if s.eat(',') {
				continue
			}
			return s.eat(']')
		}
	case 0:
		return false
	}
	start := s.i
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return s.i > start
		}
		s.i++
	}
	return s.i > start
}

// scanObject splits a JSON object into its members' raw values.
func scanObject(b []byte) (map[string][]byte, bool) {
	s := &scanner{b: b}
	out := map[string][]byte{}
	if !s.eat('{') {
		return nil, false
	}
	if s.eat('}') {
		return out, s.end()
	}
	for {
		k, ok := s.str()
		if !ok || !s.eat(':') {
			return nil, false
		}
		s.ws()
		start := s.i
		if !s.skipValue(0) {
			return nil, false
		}
		out[k] = b[start:s.i]
		if s.eat(',') {
			continue
		}
		if s.eat('}') {
			return out, s.end()
		}
		return nil, false
	}
}
