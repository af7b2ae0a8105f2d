package data

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/models/chat"
)

func TestCheck(t *testing.T) {
	lines := []string{
		`{"prompt":"a","response":"bb"}`,
		`{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"bb"}]}`, // duplicate of 1
		`{"prompt":"x","reasoning_content":"r","response":"yy"}`,
		`{"prompt":"x"`,
		`{"instruction":"i","output":"` + strings.Repeat("z", 200) + `"}`, // too long
		`{"messages":[{"role":"user","content":"u"}]}`,
	}
	p := writeFile(t, strings.Join(lines, "\n")+"\n")
	tpl, _ := chat.New(chatml, "", "<|im_end|>")
	tok := byteTok{[]string{"<|im_start|>", "<|im_end|>"}}
	var badLines []int
	rep, err := Check(p, CheckOptions{Tok: tok, Tpl: tpl, MaxSeqLen: 100, Workers: 3,
		OnBad: func(le *LineError) { badLines = append(badLines, le.Line) }})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Lines != 6 || rep.Good != 3 || rep.Bad != 3 || rep.ExactDuplicates != 1 || rep.DuplicateOf[2] != 1 || rep.WithReasoning != 1 {
		t.Fatalf("report %+v", rep)
	}
	if len(badLines) != 3 || badLines[0] != 4 || badLines[1] != 5 || badLines[2] != 6 {
		t.Fatalf("bad lines %v", badLines)
	}
	if rep.BadReasons["too_long"] != 1 || rep.BadReasons["invalid_json"] != 1 || rep.BadReasons["wrong_role_order"] != 1 {
		t.Fatalf("reasons %v", rep.BadReasons)
	}
	if rep.Formats[FormatMessages] != 1 || rep.Formats[FormatPromptResponse] != 1 || rep.Formats[FormatPromptReasoningResponse] != 1 {
		t.Fatalf("formats %v", rep.Formats)
	}
	if rep.TotalTokens == nil || rep.TotalTokens.N != 4 || rep.TotalTokens.Max < 200 || rep.ResponseTokens.Min != 3 {
		t.Fatalf("tokens %+v %+v", rep.TotalTokens, rep.ResponseTokens)
	}
	b, err := json.Marshal(rep)
	if err != nil || !strings.Contains(string(b), `"duplicate_of":1`) || !strings.Contains(string(b), `"line":4`) {
		t.Fatalf("json %s %v", b, err)
	}
	// no tokenizer: parse-only statistics
	rep, err = Check(p, CheckOptions{})
	if err != nil || rep.Bad != 2 || rep.TotalTokens != nil {
		t.Fatalf("%+v %v", rep, err)
	}
}

func TestDist(t *testing.T) {
	var h hist
	for i := 1; i <= 100; i++ {
		h.add(i)
	}
	d := h.dist()
	if d.P50 != 50 || d.P90 != 90 || d.P99 != 99 || d.Min != 1 || d.Max != 100 || d.Mean != 50.5 {
		t.Fatalf("%+v", d)
	}
}
