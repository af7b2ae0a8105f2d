package openai

import (
	"strings"
	"testing"
)

func TestToolCallSplitter(t *testing.T) {
	const call = `<tool_call>
{"name": "get_weather", "arguments": {"city": "Paris"}}
</tool_call>`
	type tc = []ToolCall
	w := ToolCall{Name: "get_weather", Arguments: `{"city": "Paris"}`}
	cases := []struct {
		parser, text string
		content      *string
		calls        tc
	}{
		{ToolParserHermes, call, nil, tc{w}},
		{ToolParserHermes, "Let me check.\n\n" + call, strp("Let me check."), tc{w}},
		{ToolParserHermes, call + "\n" + strings.Replace(call, "Paris", "Oslo", 1) + "\n", nil,
			tc{w, {Name: "get_weather", Arguments: `{"city": "Oslo"}`}}},
		{ToolParserHermes, "plain answer, no call\n", strp("plain answer, no call\n"), nil},
		{ToolParserHermes, "<tool_call>\n{not json}\n</tool_call>", strp("<tool_call>\n{not json}\n</tool_call>"), nil},
		{ToolParserHermes, "<tool_call>\n{\"arguments\": {}}\n</tool_call>", strp("<tool_call>\n{\"arguments\": {}}\n</tool_call>"), nil},
		{ToolParserHermes, "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": [1, 2]}}", nil, tc{{Name: "f", Arguments: `{"a": [1, 2]}`}}},
		{ToolParserHermes, "<tool_call>\n{\"name\": \"f\", \"argu", strp("<tool_call>\n{\"name\": \"f\", \"argu"), nil},
		{ToolParserHermes, "<tool_ca", strp("<tool_ca"), nil},
		{ToolParserHermes, "<tool_call>{\"name\": \"f\", \"arguments\": \"{\\\"x\\\": 1}\"}</tool_call> then text", strp("then text"),
			tc{{Name: "f", Arguments: `{"x": 1}`}}},
		{ToolParserHermes, "<tool_call>{\"name\": \"f\"}</tool_call>", nil, tc{{Name: "f", Arguments: `{}`}}},
		{ToolParserLlama3JSON, `{"name": "get_weather", "parameters": {"city": "Paris"}}`, nil, tc{w}},
		{ToolParserLlama3JSON, `<|python_tag|>{"name": "f", "parameters": {}}; {"name": "g", "parameters": {"y": 2}}`, nil,
			tc{{Name: "f", Arguments: `{}`}, {Name: "g", Arguments: `{"y": 2}`}}},
		{ToolParserLlama3JSON, `{"answer": 42}`, strp(`{"answer": 42}`), nil},
		{ToolParserLlama3JSON, "The weather is fine.", strp("The weather is fine."), nil},
	}
	for _, c := range cases {
		content, calls := SplitToolCalls(c.parser, c.text)
		if deref(content) != deref(c.content) || (content == nil) != (c.content == nil) || !sameCalls(calls, c.calls) {
			t.Fatalf("%s %q: got %v %+v, want %v %+v", c.parser, c.text, deref(content), calls, deref(c.content), c.calls)
		}
		// streamed one byte at a time: the same content and calls
		s := NewToolCallSplitter(c.parser)
		var cb strings.Builder
		var got []ToolCall
		for i := 0; i < len(c.text); i++ {
			a, k := s.Add(c.text[i : i+1])
			cb.WriteString(a)
			got = append(got, k...)
		}
		a, k := s.Flush()
		cb.WriteString(a)
		got = append(got, k...)
		want := ""
		if c.content != nil {
			want = *c.content
		}
		if cb.String() != want || !sameCalls(got, c.calls) {
			t.Fatalf("%s %q streamed: got %q %+v", c.parser, c.text, cb.String(), got)
		}
	}
}

func sameCalls(a, b []ToolCall) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestDecodeChatTools(t *testing.T) {
	const tools = `"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]`
	ok := []string{
		`{"model":"m","messages":[{"role":"user","content":"hi"}],` + tools + `}`,
		`{"model":"m","messages":[{"role":"user","content":"hi"}],` + tools + `,"tool_choice":"none"}`,
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[],"tool_choice":"auto"}`,
		`{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"}}]},{"role":"tool","tool_call_id":"call_1","content":"sunny"}],` + tools + `}`,
	}
	for _, b := range ok {
		if _, e := DecodeChat([]byte(b), 0); e != nil {
			t.Fatalf("%s: %v", b, e)
		}
	}
	c, _ := DecodeChat([]byte(ok[3]), 0)
	if m := c.Messages[1]; !m.NullContent || len(m.ToolCalls) != 1 || m.ToolCalls[0] != (ToolCall{ID: "call_1", Name: "get_weather", Arguments: `{"city": "Paris"}`}) {
		t.Fatalf("assistant %+v", m)
	}
	if m := c.Messages[2]; m.ToolCallID != "call_1" || m.Content != "sunny" {
		t.Fatalf("tool %+v", m)
	}
	if c.ToolChoice != ToolChoiceAuto || c.Tools == nil {
		t.Fatalf("chat %+v", c)
	}
	bad := []struct{ body, param, msg string }{
		{`"tool_choice":"required"`, "tool_choice", `needs tools`},
		{`"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"g"}}`, "tool_choice", `"g", which is not in tools`},
		{`"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"required","response_format":{"type":"json_object"}`, "response_format", "cannot be combined"},
		{`"response_format":{"type":"json_object"},"guided_regex":"a+"`, "guided_regex", "only one output constraint"},
		{`"guided_grammar":"root ::= x"`, "guided_grammar", "not supported"},
		{`"response_format":{"type":"json_schema"}`, "response_format.json_schema", "needs json_schema.schema"},
		{`"tools":[{"type":"code_interpreter"}]`, "tools[0].type", `must be "function"`},
		{`"tools":[{"type":"function","function":{"description":"x"}}]`, "tools[0].function.name", "is required"},
		{`"tools":{"type":"function"}`, "tools", "must be an array"},
		{`"tools":[{"type":"function","function":{"name":"f","parameters":"x"}}]`, "tools[0].function.parameters", "JSON Schema object"},
	}
	for _, b := range bad {
		body := `{"model":"m","messages":[{"role":"user","content":"hi"}],` + b.body + `}`
		_, e := DecodeChat([]byte(body), 0)
		if e == nil || deref(e.Param) != b.param || !strings.Contains(e.Message, b.msg) || e.Status != 400 {
			t.Fatalf("%s: got %+v", b.body, e)
		}
	}
	badMsgs := []struct{ msgs, param, msg string }{
		{`{"role":"assistant","content":null,"tool_calls":[{"type":"function","function":{"name":"f","arguments":"not json"}}]}`, "messages[1].tool_calls[0].function.arguments", "JSON object"},
		{`{"role":"assistant","tool_calls":[{"type":"function","function":{"arguments":"{}"}}]}`, "messages[1].tool_calls[0].function.name", "required"},
		{`{"role":"tool","content":"x"}`, "messages[1].tool_call_id", "required"},
		{`{"role":"user","content":"x","tool_calls":[{"type":"function","function":{"name":"f","arguments":"{}"}}]}`, "messages[1].tool_calls", "only allowed on assistant"},
	}
	for _, b := range badMsgs {
		body := `{"model":"m","messages":[{"role":"user","content":"hi"},` + b.msgs + `]}`
		_, e := DecodeChat([]byte(body), 0)
		if e == nil || deref(e.Param) != b.param || !strings.Contains(e.Message, b.msg) {
			t.Fatalf("%s: got %+v", b.msgs, e)
		}
	}
}

// FuzzToolCallSplitter: any output, cut anywhere, streams to the same content and calls as it parses
// whole, and never panics.
func FuzzToolCallSplitter(f *testing.F) {
	f.Add("hermes", "a <tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call> b", 3)
	f.Add("llama3_json", `{"name": "f", "parameters": {"x": 1}}; {"name": "g", "parameters": {}}`, 5)
	f.Add("hermes", "<tool_call><tool_call></tool_call>", 1)
	f.Fuzz(func(t *testing.T, parser, text string, step int) {
		if parser != ToolParserHermes {
			parser = ToolParserLlama3JSON
		}
		step = 1 + (step&0xff)%16
		content, calls := SplitToolCalls(parser, text)
		s := NewToolCallSplitter(parser)
		var cb strings.Builder
		var got []ToolCall
		for i := 0; i < len(text); i += step {
			a, k := s.Add(text[i:min(i+step, len(text))])
			cb.WriteString(a)
			got = append(got, k...)
		}
		a, k := s.Flush()
		cb.WriteString(a)
		got = append(got, k...)
		want := ""
		if content != nil {
			want = *content
		}
		if cb.String() != want || !sameCalls(got, calls) {
			t.Fatalf("streamed %q %+v, whole %q %+v", cb.String(), got, want, calls)
		}
	})
}
