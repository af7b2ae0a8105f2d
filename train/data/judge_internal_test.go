package data

import (
	"strings"
	"testing"

	"github.com/lorakit/lorakit/models/chat"
)

// TestJudgeReadsTools: a judge with a tool-calling template reads the tools, the call and the result as
// training renders them, and the reasoning only when asked.
func TestJudgeReadsTools(t *testing.T) {
	tpl, err := chat.New(qwenTools, "", "<|im_end|>")
	if err != nil {
		t.Fatal(err)
	}
	tok := byteTok{[]string{"<|im_start|>", "<|im_end|>"}}
	ex := parseOne(t, toolLine)
	want, _, err := RenderExample(tpl, ex)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := (&Judge{Tok: tok, Tpl: tpl}).Read(ex)
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.decode(ids); got != want || !strings.Contains(got, "<tool_call>") || !strings.Contains(got, "<tool_response>") {
		t.Fatalf("judge read %q, want the training rendering %q", got, want)
	}
	r := parseOne(t, `{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a","reasoning_content":"because"}]}`)
	for _, reasoning := range []bool{false, true} {
		ids, err := (&Judge{Tok: tok, Tpl: tpl, Reasoning: reasoning}).Read(r)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(tok.decode(ids), "because"); got != reasoning {
			t.Errorf("reasoning %v: read %q", reasoning, tok.decode(ids))
		}
	}
	plain, err := (&Judge{Tok: tok}).Read(r)
	if err != nil || tok.decode(plain) != "q\n\na" {
		t.Errorf("plain reading %q, %v", tok.decode(plain), err)
	}
}
