package data

import (
	"errors"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/models/chat"
)

// byteTok: special strings become one token each (id 1000+k), every other byte is its own token.
type byteTok struct{ specials []string }

func (b byteTok) Encode(text string, _ bool) []int {
	var ids []int
outer:
	for i := 0; i < len(text); {
		for k, s := range b.specials {
			if strings.HasPrefix(text[i:], s) {
				ids = append(ids, 1000+k)
				i += len(s)
				continue outer
			}
		}
		ids = append(ids, int(text[i]))
		i++
	}
	return ids
}

func (b byteTok) decode(ids []int) string {
	var sb strings.Builder
	for _, id := range ids {
		if id >= 1000 {
			sb.WriteString(b.specials[id-1000])
		} else {
			sb.WriteByte(byte(id))
		}
	}
	return sb.String()
}

// spTok mimics SentencePiece: a space is glued to the following byte ("▁x" is one token), and the
// text gets a prefix space, so a boundary right after a space falls inside a token.
type spTok struct {
	byteTok
	vocab map[string]int
	inv   []string
}

func newSPTok(specials ...string) *spTok {
	return &spTok{byteTok: byteTok{specials}, vocab: map[string]int{}}
}

func (s *spTok) id(piece string) int {
	if id, ok := s.vocab[piece]; ok {
		return id
	}
	s.vocab[piece] = len(s.inv)
	s.inv = append(s.inv, piece)
	return len(s.inv) - 1
}

func (s *spTok) Encode(text string, _ bool) []int {
	text = " " + text
	var ids []int
outer:
	for i := 0; i < len(text); {
		for _, sp := range s.specials {
			if strings.HasPrefix(text[i:], sp) {
				ids = append(ids, s.id(sp))
				i += len(sp)
				continue outer
			}
		}
		if text[i] == ' ' && i+1 < len(text) && text[i+1] != ' ' && !s.startsSpecial(text[i+1:]) {
			ids = append(ids, s.id(text[i:i+2]))
			i += 2
			continue
		}
		ids = append(ids, s.id(text[i:i+1]))
		i++
	}
	return ids
}

func (s *spTok) startsSpecial(t string) bool {
	for _, sp := range s.specials {
		if strings.HasPrefix(t, sp) {
			return true
		}
	}
	return false
}

func (s *spTok) decode(ids []int) string {
	var sb strings.Builder
	for _, id := range ids {
		sb.WriteString(s.inv[id])
	}
	return sb.String()
}

// targets returns the text of the tokens that are loss targets.
func targets(enc *Encoded, decode func([]int) string) string {
	var out []int
	for i, m := range enc.Mask {
		if m {
			out = append(out, enc.IDs[i+1])
		}
	}
	return decode(out)
}

const chatml = `{% for m in messages %}{{ '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}{% endfor %}` +
	`{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}`

func TestEncodeMask(t *testing.T) {
	tpl, err := chat.New(chatml, "", "<|im_end|>")
	if err != nil {
		t.Fatal(err)
	}
	tok := byteTok{[]string{"<|im_start|>", "<|im_end|>"}}
	ex := &Example{Line: 3, Messages: []chat.Message{
		{Role: "user", Content: "hi"}, {Role: "assistant", Content: "yo", ReasoningContent: "r"},
		{Role: "user", Content: "q"}, {Role: "assistant", Content: "ok"}}}
	enc, err := Encode(tok, tpl, ex, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.decode(enc.IDs); !strings.HasPrefix(got, "<|im_start|>user\nhi<|im_end|>\n") {
		t.Fatalf("text %q", got)
	}
	if got, want := targets(enc, tok.decode), "<think>\nr\n</think>\n\nyo<|im_end|>ok<|im_end|>"; got != want {
		t.Fatalf("targets %q want %q", got, want)
	}
	if enc.Mask[len(enc.Mask)-1] || enc.Truncated || enc.FullLen != len(enc.IDs) {
		t.Fatalf("mask end/truncation: %+v", enc)
	}
	if enc.ResponseTokens != enc.Targets() || enc.PromptTokens+enc.ResponseTokens != len(enc.IDs) {
		t.Fatalf("counts %d %d %d", enc.ResponseTokens, enc.PromptTokens, enc.Targets())
	}
	all, err := Encode(tok, tpl, ex, 0, true)
	if err != nil || all.Targets() != len(all.IDs)-1 {
		t.Fatalf("trainOnPrompt targets %d of %d (%v)", all.Targets(), len(all.IDs), err)
	}
}

func TestEncodeStraddlingToken(t *testing.T) {
	// Llama-2 style: the template writes " " before the content; "▁A" is one token
	src := `{% for m in messages %}{% if m.role == 'user' %}{{ bos_token + '[INST] ' + m.content + ' [/INST]' }}` +
		`{% else %}{{ ' ' + m.content + ' ' + eos_token }}{% endif %}{% endfor %}`
	tpl, err := chat.New(src, "<s>", "</s>")
	if err != nil {
		t.Fatal(err)
	}
	tok := newSPTok("<s>", "</s>")
	ex := &Example{Messages: []chat.Message{{Role: "user", Content: "Q"}, {Role: "assistant", Content: "A b"}}}
	enc, err := Encode(tok, tpl, ex, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := targets(enc, tok.decode); got != " A b </s>" {
		t.Fatalf("targets %q", got)
	}
}

func TestEncodeTruncation(t *testing.T) {
	tpl, _ := chat.New(chatml, "", "<|im_end|>")
	tok := byteTok{[]string{"<|im_start|>", "<|im_end|>"}}
	ex := &Example{Line: 9, Messages: []chat.Message{{Role: "user", Content: "hello there"}, {Role: "assistant", Content: "abcdef"}}}
	full, err := Encode(tok, tpl, ex, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	promptLen := full.PromptTokens - 1 // the trailing "\n" after <|im_end|> is prompt too
	enc, err := Encode(tok, tpl, ex, promptLen+3, false)
	if err != nil {
		t.Fatal(err)
	}
	if !enc.Truncated || len(enc.IDs) != promptLen+3 || enc.Targets() != 3 || enc.Mask[len(enc.Mask)-1] {
		t.Fatalf("truncated: %+v targets %d", enc, enc.Targets())
	}
	_, err = Encode(tok, tpl, ex, promptLen-2, false)
	if !errors.Is(err, ErrNoResponseTokens) || !strings.Contains(err.Error(), "line 9") {
		t.Fatalf("want ErrNoResponseTokens, got %v", err)
	}
}
