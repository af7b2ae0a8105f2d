package data

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/internal/testenv"
)

// encodeLine parses one line and encodes it as training does.
func encodeLine(t *testing.T, tok Tokenizer, tplSrc, line string) *Encoded {
	t.Helper()
	ex := parseOne(t, line)
	enc, err := Encode(tok, mustTpl(t, tplSrc), ex, 0, false)
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	return enc
}

// A ShareGPT conversation encodes to exactly the tokens and loss mask of the equivalent OpenAI messages,
// on the real stories260K tokenizer and chat template.
func TestShareGPTEncodesLikeMessages(t *testing.T) {
	dir := filepath.Join(testenv.Testdata(t), "models", "stories260K")
	tok, tpl := loadTokTpl(t, dir)
	pairs := [][2]string{
		{`{"conversations":[{"from":"human","value":"Tell me a story."},{"from":"gpt","value":"Once upon a time, Lily saw a cat."}]}`,
			`{"messages":[{"role":"user","content":"Tell me a story."},{"role":"assistant","content":"Once upon a time, Lily saw a cat."}]}`},
		{`{"conversations":[{"from":"system","value":"Be kind."},{"from":"human","value":"Hi"},{"from":"gpt","value":"Hello!"},{"from":"user","value":"A dog?"},{"from":"assistant","value":"The dog ran."}]}`,
			`{"messages":[{"role":"system","content":"Be kind."},{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello!"},{"role":"user","content":"A dog?"},{"role":"assistant","content":"The dog ran."}]}`},
		// LLaMA-Factory's top-level system column and a per-turn weight
		{`{"system":"Be kind.","conversations":[{"from":"human","value":"Hi"},{"from":"gpt","value":"Hello!","weight":0},{"from":"human","value":"A dog?"},{"from":"gpt","value":"The dog ran."}]}`,
			`{"messages":[{"role":"system","content":"Be kind."},{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello!","weight":0},{"role":"user","content":"A dog?"},{"role":"assistant","content":"The dog ran."}]}`},
	}
	for i, p := range pairs {
		sg, msg := parseOne(t, p[0]), parseOne(t, p[1])
		if sg.Format != FormatShareGPT || msg.Format != FormatMessages {
			t.Fatalf("pair %d: formats %q %q", i, sg.Format, msg.Format)
		}
		a, err := Encode(tok, tpl, sg, 0, false)
		if err != nil {
			t.Fatal(err)
		}
		b, err := Encode(tok, tpl, msg, 0, false)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a.IDs, b.IDs) || !reflect.DeepEqual(a.Mask, b.Mask) || a.Targets() == 0 {
			t.Errorf("pair %d: sharegpt ids %v mask %v\nmessages ids %v mask %v", i, a.IDs, a.Mask, b.IDs, b.Mask)
		}
		if exampleHash(sg) != exampleHash(msg) {
			t.Errorf("pair %d: the same conversation hashes differently in the two shapes", i)
		}
	}
}

// LLaMA-Factory's function calling (function_call / observation turns, tools as a JSON string of bare
// function definitions) encodes like the OpenAI tool-calling example.
func TestShareGPTToolsEncodeLikeMessages(t *testing.T) {
	tok := byteTok{[]string{"<|im_start|>", "<|im_end|>"}}
	sg := `{"tools":"[{\"name\":\"get_weather\",\"description\":\"Weather now\",\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}}]",` +
		`"conversations":[{"from":"human","value":"Weather in Paris?"},` +
		`{"from":"function_call","value":"{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}"},` +
		`{"from":"observation","value":"sunny, 21C"},{"from":"gpt","value":"Sunny, 21C."}]}`
	a := encodeLine(t, tok, qwenTools, sg)
	b := encodeLine(t, tok, qwenTools, toolLine)
	if !reflect.DeepEqual(a.IDs, b.IDs) || !reflect.DeepEqual(a.Mask, b.Mask) {
		t.Fatalf("sharegpt\n%q\nmessages\n%q", tok.decode(a.IDs), tok.decode(b.IDs))
	}
	// a list of calls in one function_call turn is a parallel call
	two := `{"conversations":[{"from":"human","value":"Paris and Rome?"},` +
		`{"from":"function_call","value":[{"name":"get_weather","arguments":{"city":"Paris"}},{"name":"get_weather","arguments":"{\"city\": \"Rome\"}"}]},` +
		`{"from":"tool","value":"sunny"},{"from":"tool","value":"rain"},{"from":"gpt","value":"Sunny and rainy."}],` + weatherTools + `}`
	ex := parseOne(t, two)
	if e := ex.Extra[1]; len(e.ToolCalls) != 2 || !e.NullContent || string(e.ToolCalls[1].Arguments) != `{"city": "Rome"}` {
		t.Fatalf("parallel calls: %+v", ex.Extra)
	}
}

func TestShareGPTBadLines(t *testing.T) {
	cases := map[string]string{
		`{"conversations":[{"from":"bot","value":"x"}]}`:                                                                         `conversations[0]: unsupported "from" "bot"`,
		`{"conversations":[{"from":"human"}]}`:                                                                                   `conversations[0]: missing field "value"`,
		`{"conversations":[{"value":"x"}]}`:                                                                                      `conversations[0]: missing field "from"`,
		`{"conversations":[{"from":"human","value":"a"},{"from":"human","value":"b"}]}`:                                          `wrong role order: conversations[1] is "user"`,
		`{"conversations":[{"from":"human","value":"a"}]}`:                                                                       `last message (conversations[0])`,
		`{"conversations":[{"from":"human","value":"a"},{"from":"gpt","value":7}]}`:                                              `conversations[1]: field "value": not a string`,
		`{"conversations":[]}`:                                                                                                   `field "conversations": empty`,
		`{"conversations":{"from":"human"}}`:                                                                                     `field "conversations": not an array`,
		`{"conversations":[{"from":"human","value":"a"},{"from":"function_call","value":"not json"}]}`:                           `conversations[1]: field "value": string is not valid JSON`,
		`{"conversations":[{"from":"human","value":"a"},{"from":"function_call","value":"{\"x\":1}"}]}`:                          `missing field "name"`,
		`{"system":"s","conversations":[{"from":"system","value":"t"},{"from":"human","value":"a"},{"from":"gpt","value":"b"}]}`: `give one`,
		`{"tools":"[1]","conversations":[{"from":"human","value":"a"},{"from":"gpt","value":"b"}]}`:                              `field "tools"`,
	}
	for line, want := range cases {
		_, lerr := ParseLine([]byte(line), "f.jsonl", 3)
		if lerr == nil || !strings.Contains(lerr.Error(), want) || !strings.HasPrefix(lerr.Error(), "f.jsonl:3: ") {
			t.Errorf("%s: got %v, want it to contain %q", line, lerr, want)
		}
	}
}

// A text line is the tokenizer's encoding with BOS, plus EOS, and every token after the first is a loss
// target (the first has nothing before it to be predicted from).
func TestTextShapeLossOnEveryToken(t *testing.T) {
	dir := filepath.Join(testenv.Testdata(t), "models", "stories260K")
	tok, tpl := loadTokTpl(t, dir)
	const doc = "Once upon a time, there was a little girl named Lily.\nShe liked to play."
	ex := parseOne(t, `{"text":"Once upon a time, there was a little girl named Lily.\nShe liked to play.","meta":1}`)
	if ex.Format != FormatText || ex.Text != doc || ex.Messages != nil {
		t.Fatalf("parsed %+v", ex)
	}
	enc, err := Encode(tok, tpl, ex, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	bos, _ := tok.BOS()
	eos, _ := tok.EOS()
	want := append(append([]int{bos}, tok.Encode(doc, false)...), eos)
	if !reflect.DeepEqual(enc.IDs, want) {
		t.Fatalf("ids %v, want %v", enc.IDs, want)
	}
	for i, m := range enc.Mask {
		if m != (i+1 < len(enc.IDs)) {
			t.Fatalf("mask[%d] = %v (len %d)", i, m, len(enc.Mask))
		}
	}
	if enc.ResponseTokens != len(want) || enc.PromptTokens != 0 {
		t.Errorf("response %d prompt %d", enc.ResponseTokens, enc.PromptTokens)
	}
	// truncation keeps loss on every kept token
	cut, err := Encode(tok, tpl, ex, 5, false)
	if err != nil || !cut.Truncated || cut.Targets() != 4 {
		t.Fatalf("truncated: %+v %v", cut, err)
	}
}

// One file may mix every shape; check counts each and tokenizes the text line without a template turn.
func TestMixedShapesCheck(t *testing.T) {
	dir := filepath.Join(testenv.Testdata(t), "models", "stories260K")
	tok, tpl := loadTokTpl(t, dir)
	lines := []string{
		`{"prompt":"p","response":"r"}`,
		`{"prompt":"p","reasoning_content":"t","response":"r"}`,
		`{"messages":[{"role":"user","content":"u"},{"role":"assistant","content":"a"}]}`,
		`{"instruction":"i","output":"o"}`,
		`{"conversations":[{"from":"human","value":"h"},{"from":"gpt","value":"g"}]}`,
		`{"text":"Lily ran to the park."}`,
		`{"conversations":[{"from":"human","value":"u"},{"from":"gpt","value":"a"}]}`, // same as line 3
	}
	p := writeFile(t, strings.Join(lines, "\n")+"\n")
	rep, err := Check(p, CheckOptions{Tok: tok, Tpl: tpl})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{FormatPromptResponse: 1, FormatPromptReasoningResponse: 1, FormatMessages: 1, FormatAlpaca: 1, FormatShareGPT: 2, FormatText: 1}
	if rep.Bad != 0 || !reflect.DeepEqual(rep.Formats, want) {
		t.Fatalf("bad %d formats %v errors %v", rep.Bad, rep.Formats, rep.Errors)
	}
	if rep.DuplicateOf[7] != 3 {
		t.Errorf("duplicates %v: want line 7 as a duplicate of line 3", rep.DuplicateOf)
	}
}
