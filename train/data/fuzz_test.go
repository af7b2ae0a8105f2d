package data

import (
	"errors"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/models/chat"
)

// FuzzParseLine: any line parses to an example or a LineError, never a panic; good examples obey the
// role rules and encode.
func FuzzParseLine(f *testing.F) {
	for _, s := range []string{
		`{"prompt":"p","response":"r"}`,
		`{"prompt":"p","reasoning_content":"t","response":"r","system":"s"}`,
		`{"messages":[{"role":"system","content":"s"},{"role":"user","content":"u"},{"role":"assistant","content":"a"}]}`,
		`{"instruction":"i","input":"x","output":"o"}`,
		`{"prompt":1}`, `[]`, `null`, "{\"prompt\":\"\xff\"}", `{"messages":[null]}`, toolLine,
		`{"messages":[{"role":"user","content":"u"},{"role":"assistant","content":"a","weight":0},{"role":"user","content":"v"},{"role":"assistant","content":"b"}]}`,
	} {
		f.Add([]byte(s))
	}
	tpl, err := chat.New(chatml, "", "<|im_end|>")
	if err != nil {
		f.Fatal(err)
	}
	tok := byteTok{[]string{"<|im_start|>", "<|im_end|>"}}
	f.Fuzz(func(t *testing.T, b []byte) {
		ex, lerr := ParseLine(b, "f", 7)
		if (ex == nil) == (lerr == nil) {
			t.Fatalf("ex %v err %v", ex, lerr)
		}
		if lerr != nil {
			if lerr.Line != 7 || lerr.Reason == "" || !strings.HasPrefix(lerr.Error(), "f:7: ") {
				t.Fatalf("bad error %#v", lerr)
			}
			return
		}
		order := checkOrder(ex.Messages)
		if ex.UsesTools() {
			order = checkToolOrder(ex.Messages, ex.Extra)
		}
		if order != nil {
			t.Fatalf("accepted bad order: %v", order)
		}
		if _, err := Encode(tok, tpl, ex, 64, false); err != nil && !strings.Contains(err.Error(), ErrNoResponseTokens.Error()) &&
			!errors.Is(err, ErrTemplateNoTools) {
			t.Fatalf("encode: %v", err)
		}
	})
}
