package data

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/models/chat"
)

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "d.jsonl")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadJSONLFormats(t *testing.T) {
	lines := []string{
		`{"prompt":"p1","response":"r1"}`,
		`{"prompt":"p2","reasoning_content":"think","response":"r2","system":"sys"}`,
		`{"messages":[{"role":"system","content":"s"},{"role":"user","content":"u1"},{"role":"assistant","content":"a1","reasoning_content":"rc"},{"role":"user","content":"u2"},{"role":"assistant","content":"a2"}]}`,
		`{"instruction":"do","input":"this","output":"done"}`,
		`{"instruction":"do","output":"done","extra":1}`,
		`{"prompt":"p","completion":"c"}`,
		`{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},{"role":"assistant","content":"c"}]}`,
	}
	p := writeFile(t, "\xef\xbb\xbf"+strings.Join(lines, "\n")) // BOM, no trailing newline
	var got []*Example
	err := ReadJSONL(p, true, func(ex *Example, err error) error {
		if err != nil {
			t.Fatalf("unexpected %v", err)
		}
		got = append(got, ex)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(lines) {
		t.Fatalf("got %d examples", len(got))
	}
	wantFormats := []string{FormatPromptResponse, FormatPromptReasoningResponse, FormatMessages, FormatAlpaca, FormatAlpaca, FormatPromptResponse, FormatMessages}
	for i, ex := range got {
		if ex.Format != wantFormats[i] || ex.Line != i+1 || string(ex.Raw) != lines[i] {
			t.Errorf("line %d: format %q line %d raw %q", i+1, ex.Format, ex.Line, ex.Raw)
		}
	}
	want1 := []chat.Message{{Role: "system", Content: "sys"}, {Role: "user", Content: "p2"}, {Role: "assistant", Content: "r2", ReasoningContent: "think"}}
	if !reflect.DeepEqual(got[1].Messages, want1) || !got[1].HasReasoning() || got[0].HasReasoning() {
		t.Errorf("reasoning example: %+v", got[1].Messages)
	}
	if got[3].Messages[0].Content != "do\nthis" || got[4].Messages[0].Content != "do" {
		t.Errorf("alpaca: %+v / %+v", got[3].Messages, got[4].Messages)
	}
	if got[6].Messages[0].Content != "ab" {
		t.Errorf("content parts: %+v", got[6].Messages)
	}
	if len(got[2].Messages) != 5 || got[2].Messages[2].ReasoningContent != "rc" {
		t.Errorf("messages: %+v", got[2].Messages)
	}
}

func TestReadJSONLBadLines(t *testing.T) {
	lines := []string{
		`{"prompt":"ok","response":"fine"}`,                 // 1 good
		`{"prompt":"x","response":`,                         // 2 invalid JSON
		`{"prompt":"x"}`,                                    // 3 missing response
		`{"prompt":"x","response":"  "}`,                    // 4 empty response
		`{"messages":[{"role":"assistant","content":"a"}]}`, // 5 wrong role order
		"{\"prompt\":\"\xff\xfe\",\"response\":\"r\"}",      // 6 invalid UTF-8
		``,          // 7 empty line
		`[1,2]`,     // 8 not an object
		`{"foo":1}`, // 9 unknown format
		`{"messages":[{"role":"user","content":"u"}]}`,                                  // 10 ends with user
		`{"instruction":"i","output":""}`,                                               // 11 alpaca empty output
		`{"messages":[{"role":"user","content":"u"},{"role":"assistant","content":5}]}`, // 12 not a string
		`{"messages":[{"role":"bot","content":"u"}]}`,                                   // 13 unknown role
		`{"response":"r"}`, // 14 missing prompt
		`{"messages":[{"role":"user","content":"u"},{"role":"user","content":"v"},{"role":"assistant","content":"a"}]}`, // 15 order
		`{"text":"  "}`,                       // 16 blank text
		`{"prompt":"ok2","response":"fine2"}`, // 17 good
	}
	want := map[int]string{
		2:  "invalid JSON",
		3:  `missing field "response"`,
		4:  "empty response",
		5:  "wrong role order: messages[0] is \"assistant\", want \"user\"",
		6:  "invalid UTF-8 at byte 12",
		7:  "empty line",
		8:  "invalid JSON: not an object",
		9:  "unknown format",
		10: "wrong role order: last message",
		11: "empty response",
		12: `messages[1]: field "content": not a string`,
		13: `messages[0]: unsupported role "bot"`,
		14: `missing field "prompt"`,
		15: "wrong role order: messages[1]",
		16: `empty text (field "text")`,
	}
	p := writeFile(t, strings.Join(lines, "\n")+"\n")
	var good []int
	bad := map[int]string{}
	err := ReadJSONL(p, false, func(ex *Example, err error) error {
		if err != nil {
			var le *LineError
			if !errors.As(err, &le) {
				t.Fatalf("not a LineError: %v", err)
			}
			if le.File != p || !strings.HasPrefix(le.Error(), p+":") {
				t.Errorf("file in error: %v", le)
			}
			bad[le.Line] = le.Reason
			return nil
		}
		good = append(good, ex.Line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(good, []int{1, 17}) {
		t.Errorf("good lines %v", good)
	}
	if len(good)+len(bad) != len(lines) {
		t.Errorf("lost lines: %d good + %d bad != %d", len(good), len(bad), len(lines))
	}
	for line, sub := range want {
		if !strings.Contains(bad[line], sub) {
			t.Errorf("line %d: reason %q, want it to contain %q", line, bad[line], sub)
		}
	}
	// strict stops at the first bad line and returns it
	n := 0
	err = ReadJSONL(p, true, func(ex *Example, err error) error { n++; return nil })
	var le *LineError
	if !errors.As(err, &le) || le.Line != 2 || n != 2 {
		t.Fatalf("strict: %v after %d lines", err, n)
	}
	// a callback error stops reading
	stop := errors.New("stop")
	if err := ReadJSONL(p, false, func(*Example, error) error { return stop }); err != stop {
		t.Fatalf("callback error: %v", err)
	}
	if err := ReadJSONL(filepath.Join(t.TempDir(), "missing.jsonl"), false, func(*Example, error) error { return nil }); err == nil {
		t.Fatal("missing file: no error")
	}
}

func TestReadJSONLCRLFAndLongLine(t *testing.T) {
	long := `{"prompt":"` + strings.Repeat("a", 3<<20) + `","response":"r"}`
	p := writeFile(t, "{\"prompt\":\"a\",\"response\":\"b\"}\r\n"+long+"\n\n")
	var lines []int
	var bad []int
	err := ReadJSONL(p, false, func(ex *Example, err error) error {
		if err != nil {
			bad = append(bad, err.(*LineError).Line)
			return nil
		}
		lines = append(lines, ex.Line)
		return nil
	})
	if err != nil || !reflect.DeepEqual(lines, []int{1, 2}) || !reflect.DeepEqual(bad, []int{3}) {
		t.Fatalf("lines %v bad %v err %v", lines, bad, err)
	}
}

func TestEvalSplit(t *testing.T) {
	tr, ev, err := EvalSplit(100, 0.05, 7)
	if err != nil || len(ev) != 5 || len(tr) != 95 {
		t.Fatalf("%v %v %v", tr, ev, err)
	}
	tr2, ev2, _ := EvalSplit(100, 0.05, 7)
	if !reflect.DeepEqual(ev, ev2) || !reflect.DeepEqual(tr, tr2) {
		t.Fatal("not deterministic")
	}
	_, ev3, _ := EvalSplit(100, 0.05, 8)
	if reflect.DeepEqual(ev, ev3) {
		t.Error("seed ignored")
	}
	seen := map[int]bool{}
	for _, i := range append(tr, ev...) {
		if seen[i] || i < 0 || i >= 100 {
			t.Fatalf("bad index %d", i)
		}
		seen[i] = true
	}
	if _, ev, _ := EvalSplit(3, 0.01, 1); len(ev) != 1 {
		t.Errorf("small n: %v", ev)
	}
	if _, _, err := EvalSplit(10, 1, 1); err == nil {
		t.Error("fraction 1 accepted")
	}
}
