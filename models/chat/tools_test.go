package chat

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
)

const weatherTools = `[{"type":"function","function":{"name":"get_weather","description":"Weather now","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]`

func weatherConversation() []WireMessage {
	q, res := "Weather in Paris?", "sunny, 21C"
	return []WireMessage{
		{Role: "user", Content: &q},
		{Role: "assistant", ToolCalls: []WireCall{{ID: "call_1", Type: "function",
			Function: WireFunction{Name: "get_weather", Arguments: json.RawMessage(`{"city": "Paris"}`)}}}},
		{Role: "tool", Content: &res, ToolCallID: "call_1"},
	}
}

func TestRenderConversationQwen(t *testing.T) {
	src, err := os.ReadFile("testdata/qwen25_tools.jinja")
	if err != nil {
		t.Fatal(err)
	}
	tpl, err := New(string(src), "", "<|im_end|>")
	if err != nil {
		t.Fatal(err)
	}
	if f := tpl.ToolCallFormat(); f != ToolFormatHermes {
		t.Fatalf("format %q", f)
	}
	out, err := tpl.RenderConversation(weatherConversation(), json.RawMessage(weatherTools), true, json.RawMessage(`{"enable_thinking":false}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"<tools>\n" + `{"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}` + "\n</tools>",
		"<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>\n",
		"<|im_start|>user\n<tool_response>\nsunny, 21C\n</tool_response><|im_end|>\n<|im_start|>assistant\n",
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("rendering lacks %q:\n%s", want, out)
		}
	}
}

func TestRenderConversationRefusesAndFallsBack(t *testing.T) {
	chatml := "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + (m.content or '') + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
	tpl, err := New(chatml, "", "<|im_end|>")
	if err != nil {
		t.Fatal(err)
	}
	if tpl.ToolCallFormat() != ToolFormatNone {
		t.Fatal("chatml has a tool format")
	}
	q := "hi"
	if _, err := tpl.RenderConversation([]WireMessage{{Role: "user", Content: &q}}, json.RawMessage(weatherTools), true, nil); !errors.Is(err, ErrTemplateNoTools) || !strings.Contains(err.Error(), "ignores the tools list") {
		t.Fatalf("tools ignored: %v", err)
	}
	if _, err := tpl.RenderConversation(weatherConversation(), nil, true, nil); !errors.Is(err, ErrTemplateNoTools) || !strings.Contains(err.Error(), "tool_calls") {
		t.Fatalf("tool calls dropped: %v", err)
	}
	// DeepSeek-R1 concatenates arguments: it gets them as a string
	ds := `{% for m in messages %}{% if m.role == 'assistant' %}{% for c in m.tool_calls %}{{ '<call>' + c.function.name + '\n' + c.function.arguments + '<end>' }}{% endfor %}` +
		`{% else %}{{ '<' + m.role + '>' + m.content }}{% endif %}{% endfor %}{% if tools %}{{ tools | length }}{% endif %}`
	if tpl, err = New(ds, "", ""); err != nil {
		t.Fatal(err)
	}
	out, err := tpl.RenderConversation(weatherConversation(), json.RawMessage(weatherTools), false, nil)
	if want := "<user>Weather in Paris?<call>get_weather\n{\"city\": \"Paris\"}<end><tool>sunny, 21C1"; err != nil || out != want {
		t.Fatalf("%q %v", out, err)
	}
}

func TestToolCallFormatLlama(t *testing.T) {
	src := `{{- bos_token }}{%- for message in messages %}{%- if message.role == "ipython" or message.role == "tool" %}` +
		`{{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}{%- elif 'tool_calls' in message %}` +
		`{{- '{"name": "' + message.tool_calls[0].function.name + '", "parameters": ' + message.tool_calls[0].function.arguments | tojson + '}' }}` +
		`{%- endif %}{%- endfor %}`
	tpl, err := New(src, "<|begin_of_text|>", "<|eot_id|>")
	if err != nil {
		t.Fatal(err)
	}
	if f := tpl.ToolCallFormat(); f != ToolFormatLlama3JSON {
		t.Fatalf("format %q", f)
	}
}
