package data

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/models/chat"
	"github.com/lorakit/lorakit/models/testmodel"
	"github.com/lorakit/lorakit/models/tokenizer"
)

// qwenTools is the Qwen2.5-Instruct chat template (tools system prompt, <tool_call> blocks with
// `arguments | tojson`, consecutive tool results in one user turn as <tool_response> blocks).
const qwenTools = `{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
`

const weatherTools = `"tools":[{"type":"function","function":{"name":"get_weather","description":"Weather now","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]`

// toolLine is a two-turn tool conversation: a tool call (OpenAI form: null content, arguments as a
// JSON string), its result, and the final answer.
const toolLine = `{` + weatherTools + `,"messages":[` +
	`{"role":"user","content":"Weather in Paris?"},` +
	`{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"}}]},` +
	`{"role":"tool","tool_call_id":"c1","name":"get_weather","content":"sunny, 21C"},` +
	`{"role":"assistant","content":"Sunny, 21C."}]}`

const toolSystem = "<|im_start|>system\nYou are a helpful assistant.\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n" +
	`{"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}` +
	"\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n"

// The rendering of toolLine, split into prompt (false) and assistant (true) pieces.
var toolPieces = []struct {
	text string
	asst bool
}{
	{toolSystem + "<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n", false},
	{"<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>", true},
	{"\n<|im_start|>user\n<tool_response>\nsunny, 21C\n</tool_response><|im_end|>\n<|im_start|>assistant\n", false},
	{"Sunny, 21C.<|im_end|>", true},
	{"\n", false},
}

func parseOne(t *testing.T, line string) *Example {
	t.Helper()
	ex, lerr := ParseLine([]byte(line), "t.jsonl", 1)
	if lerr != nil {
		t.Fatal(lerr)
	}
	return ex
}

func TestToolExampleMaskExact(t *testing.T) {
	tpl, err := chat.New(qwenTools, "", "<|im_end|>")
	if err != nil {
		t.Fatal(err)
	}
	ex := parseOne(t, toolLine)
	if !ex.UsesTools() || !ex.HasToolCalls() || ex.Format != FormatMessages {
		t.Fatalf("example %+v", ex)
	}
	var want strings.Builder
	var wantAsst []bool // per byte
	for _, p := range toolPieces {
		want.WriteString(p.text)
		for range len(p.text) {
			wantAsst = append(wantAsst, p.asst)
		}
	}
	text, spans, err := RenderExample(tpl, ex)
	if err != nil {
		t.Fatal(err)
	}
	if text != want.String() {
		t.Fatalf("rendered\n%q\nwant\n%q", text, want.String())
	}
	if len(spans) != 2 || text[spans[0][0]:spans[0][1]] != toolPieces[1].text || text[spans[1][0]:spans[1][1]] != toolPieces[3].text {
		t.Fatalf("spans %v: %q", spans, text)
	}
	// byte tokenizer: every byte a token except the two specials, so the mask is checked token by token
	tok := byteTok{[]string{"<|im_start|>", "<|im_end|>"}}
	enc, err := Encode(tok, tpl, ex, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	var wantMask []bool
	pos := 0
	for _, id := range enc.IDs {
		n := 1
		if id >= 1000 {
			n = len(tok.specials[id-1000])
		}
		wantMask = append(wantMask, wantAsst[pos])
		pos += n
	}
	wantMask = append(wantMask[1:], false) // Mask[i]: predicting IDs[i+1]
	for i := range wantMask {
		if enc.Mask[i] != wantMask[i] {
			t.Fatalf("mask[%d] = %v, want %v (token %q)", i, enc.Mask[i], wantMask[i], tok.decode(enc.IDs[i+1:i+2]))
		}
	}
	if got := targets(enc, tok.decode); got != toolPieces[1].text+toolPieces[3].text {
		t.Fatalf("targets %q", got)
	}

	// the tiny test model's byte-level BPE tokenizer
	dir := t.TempDir()
	if err := testmodel.Write(dir, testmodel.Default()); err != nil {
		t.Fatal(err)
	}
	btok, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	enc, err = Encode(btok, tpl, ex, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	ids := btok.Encode(text, false)
	if len(ids) != len(enc.IDs) {
		t.Fatalf("ids differ from encoding the text in one go")
	}
	// expected: the tokens of each assistant piece, found by encoding the prefixes before and after it
	wantMask = make([]bool, len(ids))
	off := 0
	for _, p := range toolPieces {
		lo := len(btok.Encode(text[:off], false))
		off += len(p.text)
		hi := len(btok.Encode(text[:off], false))
		if p.asst {
			for i := lo; i < hi; i++ {
				wantMask[i-1] = true
			}
		}
	}
	for i := range wantMask {
		if enc.Mask[i] != wantMask[i] {
			t.Fatalf("bpe mask[%d] = %v, want %v", i, enc.Mask[i], wantMask[i])
		}
	}
	var got []int
	for i, m := range enc.Mask {
		if m {
			got = append(got, enc.IDs[i+1])
		}
	}
	if s := btok.Decode(got, false); s != toolPieces[1].text+toolPieces[3].text {
		t.Fatalf("bpe targets %q", s)
	}
}

func TestToolExampleForms(t *testing.T) {
	tpl, err := chat.New(qwenTools, "", "<|im_end|>")
	if err != nil {
		t.Fatal(err)
	}
	ref, _, err := RenderExample(tpl, parseOne(t, toolLine))
	if err != nil {
		t.Fatal(err)
	}
	prompt, last, ok, err := LastTurn(tpl, parseOne(t, toolLine))
	if err != nil || !ok || last != "Sunny, 21C." || prompt != ref[:len(ref)-len("Sunny, 21C.<|im_end|>\n")] {
		t.Fatalf("LastTurn: %v %v %q %q", err, ok, prompt, last)
	}
	// arguments as an object, content absent, tools as a JSON string: the same text
	obj := strings.Replace(toolLine, `"arguments":"{\"city\": \"Paris\"}"`, `"arguments":{"city":"Paris"}`, 1)
	obj = strings.Replace(obj, `"content":null,`, ``, 1)
	obj = strings.Replace(obj, weatherTools, `"tools":"[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"Weather now\",\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}}}]"`, 1)
	if obj == toolLine {
		t.Fatal("replacements did not apply")
	}
	text, _, err := RenderExample(tpl, parseOne(t, obj))
	if err != nil || text != ref {
		t.Fatalf("object form: %v\n%q\nwant\n%q", err, text, ref)
	}

	// weight 0 on the tool-call turn: only the final answer is a target
	w0 := strings.Replace(toolLine, `"tool_calls":[`, `"weight":0,"tool_calls":[`, 1)
	_, spans, err := RenderExample(tpl, parseOne(t, w0))
	if err != nil || len(spans) != 1 || ref[spans[0][0]:spans[0][1]] != "Sunny, 21C.<|im_end|>" {
		t.Fatalf("weight 0: %v %v", spans, err)
	}

	// an example may end with the tool call (no result yet); content next to the calls is generated too
	end := `{` + weatherTools + `,"messages":[{"role":"user","content":"Paris?"},{"role":"assistant","content":"Checking.","tool_calls":[` +
		`{"type":"function","function":{"name":"get_weather","arguments":"{}"}},{"type":"function","function":{"name":"get_weather","arguments":{"city":"Lyon"}}}]}]}`
	text, spans, err = RenderExample(tpl, parseOne(t, end))
	want := "Checking.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Lyon\"}}\n</tool_call><|im_end|>"
	if err != nil || len(spans) != 1 || text[spans[0][0]:spans[0][1]] != want {
		t.Fatalf("ends with calls: %v %v %q", err, spans, text)
	}

	// weights on a plain conversation
	plain := `{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"bad","weight":0},{"role":"user","content":"b"},{"role":"assistant","content":"good","weight":1}]}`
	ex := parseOne(t, plain)
	if ex.UsesTools() {
		t.Fatal("plain example uses tools")
	}
	text, spans, err = RenderExample(tpl, ex)
	if err != nil || len(spans) != 1 || text[spans[0][0]:spans[0][1]] != "good<|im_end|>" {
		t.Fatalf("plain weights: %v %v %q", err, spans, text)
	}
}

// A template that concatenates arguments as a string (as DeepSeek-R1's does) gets the string form.
func TestToolArgumentsStringTemplate(t *testing.T) {
	src := `{% for m in messages %}{% if m.role == 'assistant' and m.content is none %}{{ '<A>' }}` +
		`{% for c in m.tool_calls %}{{ c.function.name + '\n' + c.function.arguments + '\n' }}{% endfor %}{{ '<E>' }}` +
		`{% elif m.role == 'tool' %}{{ '<T>' + m.content + '<E>' }}{% else %}{{ '<' + m.role + '>' + m.content + '<E>' }}{% endif %}{% endfor %}` +
		`{% if tools %}{{ tools | length }}{% endif %}`
	tpl, err := chat.New(src, "", "<E>")
	if err != nil {
		t.Fatal(err)
	}
	text, spans, err := RenderExample(tpl, parseOne(t, toolLine))
	if err != nil {
		t.Fatal(err)
	}
	want := "<user>Weather in Paris?<E><A>get_weather\n{\"city\": \"Paris\"}\n<E><T>sunny, 21C<E><assistant>Sunny, 21C.<E>1"
	if text != want || len(spans) != 2 || text[spans[0][0]:spans[0][1]] != "get_weather\n{\"city\": \"Paris\"}\n<E>" {
		t.Fatalf("%q %v", text, spans)
	}
}

func TestToolTemplateErrors(t *testing.T) {
	noTools := strings.Replace(toolLine, weatherTools+",", "", 1)
	line := func(tpl, l string) error {
		t.Helper()
		c, err := chat.New(tpl, "", "<|im_end|>")
		if err != nil {
			t.Fatal(err)
		}
		_, err = Encode(byteTok{}, c, parseOne(t, l), 0, false)
		return err
	}
	for _, tc := range []struct{ name, tpl, want string }{
		{"no tool support", chatml, `field "tools": the chat template cannot render tool-calling`},
		{"no tool support, no tools list", chatml, "messages[1].tool_calls: the chat template cannot render tool-calling"},
		{"ignores tools", strings.Replace(qwenTools, "{%- if tools %}", "{%- if false %}", 1), `field "tools": the chat template cannot render`},
		{"drops tool results", strings.Replace(qwenTools, "{{- message.content }}\n        {{- '\\n</tool_response>' }}", "{{- '\\n</tool_response>' }}", 1), `messages[2]: the chat template cannot render`},
	} {
		l := toolLine
		if strings.HasSuffix(tc.name, "no tools list") {
			l = noTools
		}
		err := line(tc.tpl, l)
		if err == nil || !errors.Is(err, ErrTemplateNoTools) || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "line 1: ") {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

func TestToolBadShapes(t *testing.T) {
	u := `{"role":"user","content":"q"}`
	call := func(fn string) string {
		return `{"role":"assistant","content":null,"tool_calls":[{"type":"function","function":` + fn + `}]}`
	}
	ok := call(`{"name":"f","arguments":"{}"}`)
	tool := `{"role":"tool","tool_call_id":"x","content":"r"}`
	a := `{"role":"assistant","content":"done"}`
	msgs := func(ms ...string) string { return `{"messages":[` + strings.Join(ms, ",") + `]}` }
	for _, tc := range []struct{ line, want string }{
		{msgs(u, `{"role":"assistant","content":null,"tool_calls":{"type":"function"}}`), `messages[1]: field "tool_calls": not a list of objects`},
		{msgs(u, call(`{"arguments":"{}"}`)), `messages[1]: tool_calls[0].function: missing field "name"`},
		{msgs(u, `{"role":"assistant","content":null,"tool_calls":[{"type":"function"}]}`), `messages[1]: tool_calls[0]: missing field "function"`},
		{msgs(u, call(`{"name":"f"}`)), `messages[1]: tool_calls[0].function: missing field "arguments"`},
		{msgs(u, call(`{"name":"f","arguments":"{city: 1}"}`)), `messages[1]: tool_calls[0].function: field "arguments": string is not valid JSON`},
		{msgs(u, call(`{"name":"f","arguments":"[1]"}`)), `field "arguments": not a JSON object`},
		{msgs(u, `{"role":"assistant","content":null,"tool_calls":[{"type":"code","function":{"name":"f","arguments":"{}"}}]}`), `tool_calls[0]: field "type": want "function"`},
		{msgs(u, a, tool, a), `wrong role order: messages[2] is a "tool" result without a preceding assistant tool call`},
		{msgs(u, tool, a), `wrong role order: messages[1] is a "tool" result without a preceding assistant tool call`},
		{msgs(u, ok, u, a), `wrong role order: messages[2] is "user", want "tool"`},
		{msgs(u, ok, tool, tool, a), `messages[3] is a "tool" result, but messages[1] made only 1 tool call(s)`},
		{msgs(u, strings.Replace(ok, `"type"`, `"id":"c9","type"`, 1), tool, a), `messages[2]: field "tool_call_id": "x" matches no tool call of messages[1]`},
		{msgs(u, ok, tool), `wrong role order: last message (messages[2]) is "tool"`},
		{msgs(`{"role":"user","content":"q","tool_calls":[]}`, a), `messages[0]: field "tool_calls" on a user message`},
		{msgs(u, `{"role":"assistant","content":null}`), `messages[1]: missing field "content"`},
		{msgs(u, `{"role":"assistant","content":"x","weight":2}`), `messages[1]: field "weight": want 0 or 1`},
		{msgs(u, `{"role":"assistant","content":"x","weight":0}`), `field "weight": every assistant message has weight 0`},
		{msgs(`{"role":"user","content":"q","weight":1}`, a), `messages[0]: field "weight" on a user message`},
		{`{"tools":{"a":1},"messages":[` + u + `,` + a + `]}`, `field "tools": not a list of objects`},
		{`{"tools":[{"type":"function","function":{"description":"d"}}],"messages":[` + u + `,` + a + `]}`, `tools[0].function: missing field "name"`},
		{`{"tools":[{"type":"function","function":{"name":"f"}}],"prompt":"p","response":"r"}`, `field "tools": only the "messages" and "conversations" formats carry tools`},
	} {
		_, lerr := ParseLine([]byte(tc.line), "f.jsonl", 9)
		if lerr == nil || !strings.HasPrefix(lerr.Error(), "f.jsonl:9: ") || !strings.Contains(lerr.Reason, tc.want) {
			t.Errorf("%s\n  got %v\n  want %q", tc.line, lerr, tc.want)
		}
	}
	// parallel calls answered in order, ids matched, a name on the result, a final answer
	good := msgs(u, `{"role":"assistant","content":"","tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"{}"}},{"id":"b","type":"function","function":{"name":"g","arguments":{}}}]}`,
		`{"role":"tool","tool_call_id":"b","name":"g","content":"1"}`, `{"role":"tool","tool_call_id":"a","content":[{"type":"text","text":"2"}]}`, a, u, a)
	ex := parseOne(t, good)
	if len(ex.Extra[1].ToolCalls) != 2 || ex.Extra[2].Name != "g" || ex.Messages[3].Content != "2" || ex.Extra[1].NullContent {
		t.Fatalf("%+v", ex)
	}
}

func TestToolCheckAndScore(t *testing.T) {
	lines := []string{
		toolLine,
		strings.Replace(toolLine, "Paris", "Lyon", -1),
		toolLine, // duplicate
		`{"prompt":"a","response":"bb"}`,
		strings.Replace(toolLine, `"name":"get_weather","arguments"`, `"arguments"`, 1), // bad
	}
	p := writeFile(t, strings.Join(lines, "\n")+"\n")
	tpl, _ := chat.New(qwenTools, "", "<|im_end|>")
	tok := byteTok{[]string{"<|im_start|>", "<|im_end|>"}}
	rep, err := Check(p, CheckOptions{Tok: tok, Tpl: tpl, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Good != 4 || rep.Bad != 1 || rep.WithToolCalls != 3 || rep.WithTools != 3 || rep.ExactDuplicates != 1 || rep.DuplicateOf[3] != 1 {
		t.Fatalf("report %+v", rep)
	}
	if rep.Errors[0].Line != 5 || !strings.Contains(rep.Errors[0].Reason, `tool_calls[0].function: missing field "name"`) {
		t.Fatalf("errors %v", rep.Errors[0])
	}
	// a template without tool support: every tool example is a template error naming its line
	rep, err = Check(p, CheckOptions{Tok: tok, Tpl: mustTpl(t, chatml), Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Good != 1 || rep.BadReasons["template_error"] != 3 || rep.Errors[0].Line != 1 ||
		!strings.Contains(rep.Errors[0].Error(), p+`:1: template error: field "tools": the chat template cannot render`) {
		t.Fatalf("report %+v %v", rep, rep.Errors)
	}

	out := filepath.Join(t.TempDir(), "scored.jsonl")
	sum, err := ScoreFile(p, out, ScoreOptions{Tok: tok, Tpl: tpl, Scorer: &fakeScorer{}, BatchTokens: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Scored != 4 || sum.Bad != 1 {
		t.Fatalf("score %+v", sum)
	}
	rows := readScored(t, out)
	var s Score
	if err := json.Unmarshal(rows[0]["score"], &s); err != nil {
		t.Fatal(err)
	}
	want := len(tok.Encode(toolPieces[1].text+toolPieces[3].text, false))
	if s.ResponseTokens != want || s.IFD <= 0 {
		t.Fatalf("score %+v, want %d response tokens", s, want)
	}
}

func mustTpl(t *testing.T, src string) *chat.Template {
	t.Helper()
	c, err := chat.New(src, "", "<|im_end|>")
	if err != nil {
		t.Fatal(err)
	}
	return c
}
