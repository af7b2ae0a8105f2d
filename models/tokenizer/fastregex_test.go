package tokenizer

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

var matcherPatterns = []string{gpt2Pattern, llama3Pattern, qwenPattern}

// checkFastMatchers compares the hand-written matchers with regexp2 on s.
func checkFastMatchers(t *testing.T, s string) {
	t.Helper()
	for _, expr := range matcherPatterns {
		re, err := compileRegex(expr)
		if err != nil {
			t.Fatal(err)
		}
		want := regexp2Matcher{re}.findAll(s, nil)
		got := fastMatcherFor(expr).findAll(s, nil)
		if !slices.Equal(got, want) {
			t.Fatalf("pattern %q on %q:\n got %v\nwant %v", expr, s, got, want)
		}
	}
}

// trickyRunes exercise every branch of the split patterns.
var trickyRunes = []rune("aZé日本ß'sStTrRvVeElLmMdD019٣²Ⅷ \t\n\r\u00a0\u3000\u2028\u0085\v\f.,!?-_()[]{}\"'`~@#$%^&*+=<>/\\|😀🦙\u0301\u200b\ufffdxyz")

func randomTricky(r *rand.Rand, n int) string {
	var sb strings.Builder
	for i := 0; i < n; i++ {
		sb.WriteRune(trickyRunes[r.IntN(len(trickyRunes))])
	}
	return sb.String()
}

func TestFastMatchers(t *testing.T) {
	for _, s := range []string{"", " ", "  ", "a", "'s", "'S", "'ll", "'LL'", "x'Re", " 123456", "a  b", "a \n b",
		"\n\n  \n x", "  \t", " !!\r\n\n", "hello world", "ab12345cd", "😀😀 x", "'", "' s"} {
		checkFastMatchers(t, s)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 3000; i++ {
		checkFastMatchers(t, randomTricky(r, 1+r.IntN(24)))
	}
}

func FuzzFastMatchers(f *testing.F) {
	f.Add("Hello, y'all! How are you 😁 ?我想在apple工作1314151天～")
	f.Add("  \n\n\t x'LL 12345")
	f.Fuzz(func(t *testing.T, s string) {
		s = strings.ToValidUTF8(s, "\uFFFD")
		checkFastMatchers(t, s)
	})
}

func TestUnicode16Categories(t *testing.T) {
	// U+13460 (Egyptian Hieroglyphs Extended-A), U+2EBF0 (CJK Extension I) are letters, U+1FAE9 (an emoji) a
	// symbol in Unicode 16; Go 1.26's tables predate them.
	for _, c := range []struct {
		expr string
		s    string
	}{{`\p{L}+`, "\U00013460\U0002EBF0"}, {`[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+`, "\U00013460"}, {`\p{S}`, "\U0001FAE9"}} {
		re, err := compileRegex(c.expr)
		if err != nil {
			t.Fatal(err)
		}
		if got := (regexp2Matcher{re}).findAll(c.s, nil); len(got) != 1 || got[0] != [2]int{0, len(c.s)} {
			t.Errorf("%s on %q: %v", c.expr, c.s, got)
		}
	}
	if !isL(0x13460) || !isL(0x2EBF0) || isL(0x1FAE9) || !isN(0x1CCF0) {
		t.Error("fast class tests")
	}
	if got := widenCategories(`[^\p{L}]|\P{N}|\\p{L}|[]\p{M}]`); !strings.HasPrefix(got, `[^\p{L}`) || !strings.Contains(got, `\\p{L}`) {
		t.Errorf("widen %q", got)
	}
}
