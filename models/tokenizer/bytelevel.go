package tokenizer

import (
	"strings"
	"unicode/utf8"
)

// byteToRune is GPT-2's bytes_to_unicode table: printable Latin-1 bytes map to themselves, the others to
// U+0100 onwards in byte order.
var byteToRune = func() (t [256]rune) {
	n := 0
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			t[b] = rune(b)
		} else {
			t[b] = rune(256 + n)
			n++
		}
	}
	return t
}()

// byteToStr holds byteToRune as strings.
var byteToStr = func() (t [256]string) {
	for b := range t {
		t[b] = string(byteToRune[b])
	}
	return t
}()

// runeToByte inverts byteToRune; -1 for runes outside the table. Runes are all below 0x144.
var runeToByte = func() (t [0x144]int16) {
	for i := range t {
		t[i] = -1
	}
	for b, r := range byteToRune {
		t[r] = int16(b)
	}
	return t
}()

func byteLevelEncode(s string) string {
	var sb strings.Builder
	sb.Grow(len(s) * 2)
	for i := 0; i < len(s); i++ {
		sb.WriteString(byteToStr[s[i]])
	}
	return sb.String()
}

// byteLevelDecodeToken appends the bytes a byte-level token stands for. A token with a character outside the
// table (an added token such as "<｜begin▁of▁sentence｜>") contributes its own UTF-8 bytes, as tokenizers does.
func byteLevelDecodeToken(dst []byte, tok string) []byte {
	start := len(dst)
	for _, r := range tok {
		if r >= 0 && int(r) < len(runeToByte) && runeToByte[r] >= 0 {
			dst = append(dst, byte(runeToByte[r]))
			continue
		}
		return append(dst[:start], tok...)
	}
	return dst
}

// lossyUTF8 converts b to valid UTF-8 the way Rust's String::from_utf8_lossy does: every maximal invalid
// subpart becomes one U+FFFD.
func lossyUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	sb.Grow(len(b) + 8)
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r != utf8.RuneError || n > 1 {
			sb.Write(b[i : i+n])
			i += n
			continue
		}
		n, _ = invalidSubpart(b[i:])
		sb.WriteString("\uFFFD")
		i += n
	}
	return sb.String()
}

// invalidSubpart returns the length of the maximal invalid subpart at the start of b (which does not start
// with a valid character), and whether it is a truncated but so-far-valid prefix that reaches the end of b.
func invalidSubpart(b []byte) (n int, truncated bool) {
	c := b[0]
	var need int
	lo, hi := byte(0x80), byte(0xBF)
	switch {
	case c >= 0xC2 && c <= 0xDF:
		need = 1
	case c == 0xE0:
		need, lo = 2, 0xA0
	case c >= 0xE1 && c <= 0xEC, c == 0xEE, c == 0xEF:
		need = 2
	case c == 0xED:
		need, hi = 2, 0x9F
	case c == 0xF0:
		need, lo = 3, 0x90
	case c >= 0xF1 && c <= 0xF3:
		need = 3
	case c == 0xF4:
		need, hi = 3, 0x8F
	default:
		return 1, false
	}
	n = 1
	for k := 0; k < need; k++ {
		if n >= len(b) {
			return n, true
		}
		if b[n] < lo || b[n] > hi {
			return n, false
		}
		lo, hi = 0x80, 0xBF
		n++
	}
	// A complete valid sequence; callers only get here for valid input.
	return n, false
}

// incompleteTail returns how many bytes at the end of b form a truncated but possibly valid UTF-8 character.
func incompleteTail(b []byte) int {
	for k := 1; k <= 3 && k <= len(b); k++ {
		c := b[len(b)-k]
		if c < 0x80 {
			return 0
		}
		if c >= 0xC0 {
			if n, trunc := invalidSubpart(b[len(b)-k:]); trunc && n == k {
				return k
			}
			return 0
		}
	}
	return 0
}
