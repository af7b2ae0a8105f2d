package serve

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/serve/openai"
)

const (
	weatherTools = `"tools":[{"type":"function","function":{"name":"get_weather","description":"Weather now","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]`
	hermesCall   = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"
)

var callID = regexp.MustCompile(`^call_[0-9a-f]{24}$`)

// toolEnv serves adapters whose fixed output is a Hermes tool call (the fake model plays a Qwen-style
// template: ToolParser "hermes").
func toolEnv(t *testing.T, mod func(*fakeModel)) *testEnv {
	return newEnv(t, func(c *Config, fm *fakeModel) {
		fm.toolParser = openai.ToolParserHermes
		dir := t.TempDir()
		c.Adapters["call"] = writeFakeAdapter(t, filepath.Join(dir, "call"), "I will look it up.\n\n"+hermesCall)
		c.Adapters["two"] = writeFakeAdapter(t, filepath.Join(dir, "two"), hermesCall+"\n"+strings.Replace(hermesCall, "Paris", "Oslo", 1))
		c.Adapters["bad"] = writeFakeAdapter(t, filepath.Join(dir, "bad"), "<tool_call>\n{\"name\": get_weather}\n</tool_call>")
		if mod != nil {
			mod(fm)
		}
	})
}

func TestToolCallsNonStreaming(t *testing.T) {
	e := toolEnv(t, nil)
	st, b := e.post(t, "/v1/chat/completions", chatBody("two", "Weather in Paris and Oslo?", weatherTools))
	if st != 200 {
		t.Fatalf("%d %s", st, b)
	}
	if !strings.Contains(e.fm.lastPrompt, `tools: [{"type":"function","function":{"name":"get_weather"`) {
		t.Fatalf("tools not passed to the template: %q", e.fm.lastPrompt)
	}
	var resp struct {
		Choices []struct {
			Message      map[string]json.RawMessage `json:"message"`
			FinishReason string                     `json:"finish_reason"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(b, &resp); err != nil {
		t.Fatal(err)
	}
	ch := resp.Choices[0]
	if ch.FinishReason != "tool_calls" || string(ch.Message["content"]) != "null" || string(ch.Message["role"]) != `"assistant"` {
		t.Fatalf("message %s", b)
	}
	var calls []map[string]any
	if err := json.Unmarshal(ch.Message["tool_calls"], &calls); err != nil || len(calls) != 2 {
		t.Fatalf("tool_calls %s", b)
	}
	for i, city := range []string{"Paris", "Oslo"} {
		c := calls[i]
		fn := c["function"].(map[string]any)
		if !callID.MatchString(c["id"].(string)) || c["type"] != "function" || len(c) != 3 ||
			fn["name"] != "get_weather" || fn["arguments"] != `{"city": "`+city+`"}` || len(fn) != 2 {
			t.Fatalf("call %d: %v", i, c)
		}
	}
	if calls[0]["id"] == calls[1]["id"] {
		t.Fatal("call ids repeat")
	}

	// text before the call is content; parallel_tool_calls false keeps one call
	_, b = e.post(t, "/v1/chat/completions", chatBody("call", "Weather?", weatherTools))
	msg := decode(t, b)["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)
	if msg["content"] != "I will look it up." || len(msg["tool_calls"].([]any)) != 1 {
		t.Fatalf("content before call %s", b)
	}
	_, b = e.post(t, "/v1/chat/completions", chatBody("two", "Weather?", weatherTools+`,"parallel_tool_calls":false`))
	if n := len(decode(t, b)["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)["tool_calls"].([]any)); n != 1 {
		t.Fatalf("parallel_tool_calls false gave %d calls", n)
	}

	// malformed JSON inside <tool_call> comes back as content; no tools or tool_choice none: no parsing
	for _, c := range []struct{ model, extra, want string }{
		{"bad", weatherTools, "<tool_call>\n{\"name\": get_weather}\n</tool_call>"},
		{"call", "", "I will look it up.\n\n" + hermesCall},
		{"call", weatherTools + `,"tool_choice":"none"`, "I will look it up.\n\n" + hermesCall},
	} {
		st, b = e.post(t, "/v1/chat/completions", chatBody(c.model, "Weather?", c.extra))
		ch := decode(t, b)["choices"].([]any)[0].(map[string]any)
		msg := ch["message"].(map[string]any)
		if _, has := msg["tool_calls"]; st != 200 || has || msg["content"] != c.want || ch["finish_reason"] != "stop" {
			t.Fatalf("%s %s: %d %s", c.model, c.extra, st, b)
		}
	}
}

func TestToolCallsStreaming(t *testing.T) {
	e := toolEnv(t, nil)
	evs := e.stream(t, "/v1/chat/completions", chatBody("call", "Weather?", weatherTools+`,"stream":true,"stream_options":{"include_usage":true}`))
	if evs[len(evs)-1].raw != "[DONE]" {
		t.Fatal("no [DONE]")
	}
	var content strings.Builder
	var calls []map[string]any
	finish := ""
	for _, ev := range evs[1 : len(evs)-1] {
		chs := ev.data["choices"].([]any)
		if len(chs) == 0 {
			continue // usage
		}
		ch := chs[0].(map[string]any)
		d := ch["delta"].(map[string]any)
		if v, ok := d["content"].(string); ok {
			content.WriteString(v)
		}
		if tc, ok := d["tool_calls"].([]any); ok {
			for _, c := range tc {
				calls = append(calls, c.(map[string]any))
			}
		}
		if fr, ok := ch["finish_reason"].(string); ok {
			finish = fr
			if len(d) != 0 {
				t.Fatalf("final chunk %s", ev.raw)
			}
		}
	}
	if content.String() != "I will look it up." || finish != "tool_calls" || len(calls) != 1 {
		t.Fatalf("stream: content %q finish %q calls %v", content.String(), finish, calls)
	}
	c := calls[0]
	fn := c["function"].(map[string]any)
	if c["index"] != 0.0 || !callID.MatchString(c["id"].(string)) || c["type"] != "function" ||
		fn["name"] != "get_weather" || fn["arguments"] != `{"city": "Paris"}` {
		t.Fatalf("streamed call %v", c)
	}

	evs = e.stream(t, "/v1/chat/completions", chatBody("two", "Weather?", weatherTools+`,"stream":true`))
	var idx []float64
	for _, ev := range evs[1 : len(evs)-1] {
		d := ev.data["choices"].([]any)[0].(map[string]any)["delta"].(map[string]any)
		tc, _ := d["tool_calls"].([]any)
		for _, c := range tc {
			idx = append(idx, c.(map[string]any)["index"].(float64))
		}
		if _, ok := d["content"]; ok {
			t.Fatalf("content chunk in a calls-only stream: %s", ev.raw)
		}
	}
	if len(idx) != 2 || idx[0] != 0 || idx[1] != 1 {
		t.Fatalf("indices %v", idx)
	}

	evs = e.stream(t, "/v1/chat/completions", chatBody("bad", "Weather?", weatherTools+`,"stream":true`))
	content.Reset()
	for _, ev := range evs[1 : len(evs)-1] {
		ch := ev.data["choices"].([]any)[0].(map[string]any)
		d := ch["delta"].(map[string]any)
		if _, ok := d["tool_calls"]; ok {
			t.Fatalf("tool call from malformed JSON: %s", ev.raw)
		}
		if v, ok := d["content"].(string); ok {
			content.WriteString(v)
		}
		if fr, ok := ch["finish_reason"].(string); ok && fr != "stop" {
			t.Fatalf("finish %s", ev.raw)
		}
	}
	if content.String() != "<tool_call>\n{\"name\": get_weather}\n</tool_call>" {
		t.Fatalf("malformed streamed as %q", content.String())
	}
}

func TestToolConversationAndErrors(t *testing.T) {
	e := toolEnv(t, nil)
	body := `{"model":"call","messages":[{"role":"user","content":"Weather in Paris?"},` +
		`{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"}}]},` +
		`{"role":"tool","tool_call_id":"call_1","content":"sunny, 21C"}],` + weatherTools + `}`
	if st, b := e.post(t, "/v1/chat/completions", body); st != 200 {
		t.Fatalf("%d %s", st, b)
	}
	for _, want := range []string{`assistant:  call call_1 get_weather{"city": "Paris"}`, "tool: sunny, 21C (result of call_1)"} {
		if !strings.Contains(e.fm.lastPrompt, want) {
			t.Fatalf("prompt %q lacks %q", e.fm.lastPrompt, want)
		}
	}
	// tool_choice "required" and a named function constrain the output to a call (the base model writes letters
	// when left alone)
	for _, choice := range []string{`"required"`, `{"type":"function","function":{"name":"get_weather"}}`} {
		st, b := e.post(t, "/v1/chat/completions", chatBody("call", "hi", weatherTools+`,"tool_choice":`+choice))
		if st != 200 || !strings.Contains(string(b), `"finish_reason":"tool_calls"`) || !strings.Contains(string(b), `"name":"get_weather"`) {
			t.Fatalf("tool_choice %s: %d %s", choice, st, b)
		}
	}

	e2 := toolEnv(t, func(fm *fakeModel) { fm.noTools = true })
	st, b := e2.post(t, "/v1/chat/completions", chatBody("call", "hi", weatherTools))
	if e := wantError(t, st, b, 400, "cannot take tools"); e["param"] != "tools" {
		t.Fatalf("param %v", e["param"])
	}
	e3 := toolEnv(t, func(fm *fakeModel) { fm.toolParser = "" })
	st, b = e3.post(t, "/v1/chat/completions", chatBody("call", "hi", weatherTools+`,"tool_choice":"required"`))
	if e := wantError(t, st, b, 400, "cannot be forced"); e["param"] != "tool_choice" {
		t.Fatalf("param %v", e["param"])
	}
	st, b = e3.post(t, "/v1/chat/completions", chatBody("call", "hi", weatherTools))
	wantError(t, st, b, 400, "tool-call format")
	if st, b := e3.post(t, "/v1/chat/completions", chatBody("call", "hi", weatherTools+`,"tool_choice":"none"`)); st != 200 {
		t.Fatalf("tool_choice none without a parser: %d %s", st, b)
	}
}

// Qwen3: the think block is split off first, the call after it is parsed (both ways of answering).
func TestToolCallsAfterReasoning(t *testing.T) {
	e := newEnv(t, func(c *Config, fm *fakeModel) {
		fm.reasoning, fm.toolParser = true, openai.ToolParserHermes
		c.Adapters["q3"] = writeFakeAdapter(t, filepath.Join(t.TempDir(), "q3"), "Paris weather needed.\n</think>\n\n"+hermesCall)
	})
	_, b := e.post(t, "/v1/chat/completions", chatBody("q3", "Weather?", weatherTools))
	ch := decode(t, b)["choices"].([]any)[0].(map[string]any)
	msg := ch["message"].(map[string]any)
	if msg["reasoning_content"] != "Paris weather needed.\n" || msg["content"] != nil || ch["finish_reason"] != "tool_calls" ||
		len(msg["tool_calls"].([]any)) != 1 {
		t.Fatalf("reasoning + call %s", b)
	}
	evs := e.stream(t, "/v1/chat/completions", chatBody("q3", "Weather?", weatherTools+`,"stream":true`))
	var rsn strings.Builder
	calls, finish := 0, ""
	for _, ev := range evs[1 : len(evs)-1] {
		c := ev.data["choices"].([]any)[0].(map[string]any)
		d := c["delta"].(map[string]any)
		if v, ok := d["reasoning_content"].(string); ok {
			rsn.WriteString(v)
		}
		if v, ok := d["content"].(string); ok && v != "" {
			t.Fatalf("content %q", v)
		}
		if tc, ok := d["tool_calls"].([]any); ok {
			calls += len(tc)
		}
		if fr, ok := c["finish_reason"].(string); ok {
			finish = fr
		}
	}
	if rsn.String() != "Paris weather needed.\n" || calls != 1 || finish != "tool_calls" {
		t.Fatalf("stream %q %d %q", rsn.String(), calls, finish)
	}
}

// TestForcedToolCallLlama3JSON: with a Llama 3 JSON template, tool_choice "required" constrains the output to
// {"name", "parameters"} and the call is parsed.
func TestForcedToolCallLlama3JSON(t *testing.T) {
	e := newEnv(t, func(c *Config, fm *fakeModel) {
		fm.toolParser = openai.ToolParserLlama3JSON
		c.Adapters["l3"] = writeFakeAdapter(t, filepath.Join(t.TempDir(), "l3"), `{"name": "get_weather", "parameters": {"city": "Oslo"}}`)
	})
	st, b := e.post(t, "/v1/chat/completions", chatBody("l3", "Weather in Oslo?", weatherTools+`,"tool_choice":"required"`))
	msg := decode(t, b)["choices"].([]any)[0].(map[string]any)
	calls, _ := msg["message"].(map[string]any)["tool_calls"].([]any)
	if st != 200 || msg["finish_reason"] != "tool_calls" || len(calls) != 1 {
		t.Fatalf("%d %s", st, b)
	}
	fn := calls[0].(map[string]any)["function"].(map[string]any)
	if fn["name"] != "get_weather" || fn["arguments"] != `{"city": "Oslo"}` {
		t.Fatalf("call %v", fn)
	}
}
