package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// addedToken is one entry of tokenizer.json's added_tokens.
type addedToken struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

// trie matches a set of strings leftmost-longest, like the aho-corasick automaton tokenizers uses.
type trie struct {
	first [256]bool
	edges map[uint64]int32 // node<<8 | byte -> child node
	term  []int32          // node -> index of the pattern ending there, or -1
}

func newTrie() *trie {
	return &trie{edges: make(map[uint64]int32), term: []int32{-1}}
}

func (t *trie) add(s string, idx int) {
	if s == "" {
		return
	}
	t.first[s[0]] = true
	node := int32(0)
	for i := 0; i < len(s); i++ {
		k := uint64(node)<<8 | uint64(s[i])
		child, ok := t.edges[k]
		if !ok {
			child = int32(len(t.term))
			t.term = append(t.term, -1)
			t.edges[k] = child
		}
		node = child
	}
	if t.term[node] < 0 {
		t.term[node] = int32(idx)
	}
}

// next finds the leftmost-longest match at or after from: its start, end and pattern index (idx < 0: none).
func (t *trie) next(s string, from int) (start, end, idx int) {
	for i := from; i < len(s); i++ {
		if !t.first[s[i]] {
			continue
		}
		node, best, bestEnd := int32(0), int32(-1), 0
		for j := i; j < len(s); j++ {
			child, ok := t.edges[uint64(node)<<8|uint64(s[j])]
			if !ok {
				break
			}
			node = child
			if t.term[node] >= 0 {
				best, bestEnd = t.term[node], j+1
			}
		}
		if best >= 0 {
			return i, bestEnd, int(best)
		}
	}
	return 0, 0, -1
}

// segment is a piece of input: an added token (id >= 0) or text to normalise and tokenise (id < 0).
type segment struct {
	text  string
	id    int
	start int // byte offset in the original input (0 marks the first segment)
}

// isWordChar is \w of Rust's regex crate (what tokenizers uses for single_word): Alphabetic, marks,
// decimal digits, connector punctuation and the joiners.
func isWordChar(r rune) bool {
	return isLetter16(r) || unicode.Is(unicode.Nl, r) || unicode.Is(unicode.Other_Alphabetic, r) || unicode.IsMark(r) ||
		unicode.Is(unicode.Nd, r) || unicode.Is(unicode.Pc, r) || r == 0x200C || r == 0x200D
}

// splitAdded cuts s at the added tokens of t (patterns index into toks), honouring lstrip, rstrip and
// single_word, and appends the segments to dst. base is s's offset in the original input.
func splitAdded(s string, base int, t *trie, toks []*addedToken, dst []segment) []segment {
	if t == nil || len(t.term) == 1 {
		if s != "" {
			dst = append(dst, segment{text: s, id: -1, start: base})
		}
		return dst
	}
	startOffset := 0
	for pos := 0; pos < len(s); {
		start, stop, idx := t.next(s, pos)
		if idx < 0 {
			break
		}
		pos = stop
		tok := toks[idx]
		if tok.SingleWord {
			startSpace := start == 0
			if !startSpace {
				r, _ := utf8.DecodeLastRuneInString(s[:start])
				startSpace = !isWordChar(r)
			}
			stopSpace := stop == len(s)
			if !stopSpace {
				r, _ := utf8.DecodeRuneInString(s[stop:])
				stopSpace = !isWordChar(r)
			}
			if !startSpace || !stopSpace {
				continue
			}
		}
		if start < startOffset {
			continue
		}
		if tok.LStrip {
			for start > startOffset {
				r, sz := utf8.DecodeLastRuneInString(s[:start])
				if !unicode.IsSpace(r) {
					break
				}
				start -= sz
			}
		}
		if tok.RStrip {
			for stop < len(s) {
				r, sz := utf8.DecodeRuneInString(s[stop:])
				if !unicode.IsSpace(r) {
					break
				}
				stop += sz
			}
			pos = stop
		}
		if startOffset < start {
			dst = append(dst, segment{text: s[startOffset:start], id: -1, start: base + startOffset})
		}
		dst = append(dst, segment{text: s[start:stop], id: tok.ID, start: base + start})
		startOffset = stop
	}
	if startOffset < len(s) {
		dst = append(dst, segment{text: s[startOffset:], id: -1, start: base + startOffset})
	}
	return dst
}
