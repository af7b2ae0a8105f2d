package stop

import (
	"strings"
	"testing"
)

// pieces decodes id i as text[i]; Flush returns what was held back with the last Add, as a stream decoder does.
type pieces struct {
	text []string
	tail string
}

func (p *pieces) Add(id int) string { return p.text[id] }
func (p *pieces) Flush() string     { t := p.tail; p.tail = ""; return t }

func run(r Rule, ids []int, d *pieces) (string, string, int) {
	s := r.Start()
	var out strings.Builder
	for _, id := range ids {
		t, reason := s.Next(id, d)
		out.WriteString(t)
		if reason != "" {
			return out.String(), reason, s.Tokens()
		}
	}
	return out.String(), "", s.Tokens()
}

func TestRule(t *testing.T) {
	text := []string{"a", "b", "<", "/x>", "c", "", "d"}
	const eos, turn = 5, 6
	cases := []struct {
		name   string
		r      Rule
		ids    []int
		tail   string
		want   string
		reason string
		n      int
	}{
		{"eos", Rule{EOS: []int{eos}}, []int{0, 1, eos, 4}, "", "ab", Stop, 3},
		{"eos flushes the decoder", Rule{EOS: []int{eos}}, []int{0, eos}, "z", "az", Stop, 2},
		{"ignore eos", Rule{EOS: []int{eos}, IgnoreEOS: true, MaxTokens: 4}, []int{0, eos, 1, 4}, "", "abc", Length, 4},
		{"turn end despite ignore eos", Rule{EOS: []int{eos}, IgnoreEOS: true, TurnEnd: Turn{IDs: []int{turn}}}, []int{0, turn, 1}, "", "a", Stop, 2},
		{"turn end text", Rule{TurnEnd: Turn{Text: "b<"}}, []int{0, 1, 2, 4}, "", "a", Stop, 3},
		{"stop string across tokens", Rule{Strings: []string{"</x>"}}, []int{0, 2, 3, 4}, "", "a", Stop, 3},
		{"a prefix that is not a stop string is released", Rule{Strings: []string{"<y"}}, []int{0, 2, 4}, "", "a<c", "", 3},
		{"length", Rule{MaxTokens: 2}, []int{0, 1, 4}, "", "ab", Length, 2},
		{"stop string in the flushed tail", Rule{MaxTokens: 2, Strings: []string{"bq"}}, []int{0, 1}, "qr", "a", Stop, 2},
		{"empty stop strings ignored", Rule{Strings: []string{""}}, []int{0, 1}, "", "ab", "", 2},
	}
	for _, c := range cases {
		got, reason, n := run(c.r, c.ids, &pieces{text: text, tail: c.tail})
		if got != c.want || reason != c.reason || n != c.n {
			t.Errorf("%s: %q %q after %d ids, want %q %q after %d", c.name, got, reason, n, c.want, c.reason, c.n)
		}
	}
}

// Text handed out never holds the start of a stop string, and Cut says the text was cut.
func TestRuleHoldsBack(t *testing.T) {
	s := Rule{Strings: []string{"<end>"}}.Start()
	d := &pieces{text: []string{"x<e", "n", "d>y"}}
	for i, want := range []string{"x", ""} {
		if got, reason := s.Next(i, d); got != want || reason != "" {
			t.Fatalf("id %d: %q %q, want %q", i, got, reason, want)
		}
	}
	if got, reason := s.Next(2, d); got != "" || reason != Stop || !s.Cut() {
		t.Fatalf("end: %q %q cut %v", got, reason, s.Cut())
	}
}
