package serve

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type testEnv struct {
	srv *Server
	ts  *httptest.Server
	fm  *fakeModel
	dir string
}

func newEnv(t *testing.T, mod func(*Config, *fakeModel)) *testEnv {
	t.Helper()
	fm := &fakeModel{done: make(chan struct{})}
	dir := t.TempDir()
	cfg := Config{Model: fm, ModelName: "base", ModelRoot: "/models/base",
		Adapters: map[string]string{
			"hello": writeFakeAdapter(t, filepath.Join(dir, "startup", "hello"), "hello world"),
			"shift": writeFakeAdapter(t, filepath.Join(dir, "startup", "shift"), ""),
		},
		AdapterDir: filepath.Join(dir, "lib")}
	writeFakeAdapter(t, filepath.Join(dir, "lib", "lazy"), "lazy output")
	if mod != nil {
		mod(&cfg, fm)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		close(fm.done)
		ts.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return &testEnv{srv: s, ts: ts, fm: fm, dir: dir}
}

func (e *testEnv) post(t *testing.T, path, body string, hdr ...string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", e.ts.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (e *testEnv) get(t *testing.T, path string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(e.ts.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("bad json %q: %v", b, err)
	}
	return m
}

// wantError checks an OpenAI error body: all four fields present.
func wantError(t *testing.T, status int, body []byte, wantStatus int, msgPart string) map[string]any {
	t.Helper()
	if status != wantStatus {
		t.Fatalf("status %d, want %d: %s", status, wantStatus, body)
	}
	m := decode(t, body)
	e, ok := m["error"].(map[string]any)
	if !ok {
		t.Fatalf("no error object: %s", body)
	}
	for _, k := range []string{"message", "type", "param", "code"} {
		if _, ok := e[k]; !ok {
			t.Fatalf("error lacks %q: %s", k, body)
		}
	}
	if !strings.Contains(e["message"].(string), msgPart) {
		t.Fatalf("message %q lacks %q", e["message"], msgPart)
	}
	return e
}

func chatBody(model, content string, extra string) string {
	b := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":%q}]`, model, content)
	if extra != "" {
		b += "," + extra
	}
	return b + "}"
}

func TestChatNonStreaming(t *testing.T) {
	e := newEnv(t, nil)
	st, b := e.post(t, "/v1/chat/completions", chatBody("hello", "hi", ""))
	if st != 200 {
		t.Fatalf("%d %s", st, b)
	}
	m := decode(t, b)
	if m["object"] != "chat.completion" || !strings.HasPrefix(m["id"].(string), "chatcmpl-") || m["model"] != "hello" {
		t.Fatalf("shape %s", b)
	}
	ch := m["choices"].([]any)[0].(map[string]any)
	msg := ch["message"].(map[string]any)
	if msg["role"] != "assistant" || msg["content"] != "hello world" || ch["finish_reason"] != "stop" || ch["index"].(float64) != 0 {
		t.Fatalf("choice %s", b)
	}
	if _, ok := ch["logprobs"]; !ok {
		t.Fatal("logprobs key missing")
	}
	if _, ok := msg["refusal"]; !ok {
		t.Fatal("refusal key missing")
	}
	u := m["usage"].(map[string]any)
	prompt := len("user: hi\nassistant: ")
	if int(u["prompt_tokens"].(float64)) != prompt || u["completion_tokens"].(float64) != 12 || int(u["total_tokens"].(float64)) != prompt+12 {
		t.Fatalf("usage %v", u)
	}
	// base model, max_tokens → length
	st, b = e.post(t, "/v1/chat/completions", chatBody("base", "hi", `"max_tokens":5,"temperature":0`))
	m = decode(t, b)
	ch = m["choices"].([]any)[0].(map[string]any)
	if st != 200 || ch["finish_reason"] != "length" || len(ch["message"].(map[string]any)["content"].(string)) != 5 {
		t.Fatalf("%d %s", st, b)
	}
	// max_completion_tokens, n=2, logprobs
	st, b = e.post(t, "/v1/chat/completions", chatBody("base", "hi", `"max_completion_tokens":3,"n":2,"logprobs":true,"top_logprobs":2`))
	m = decode(t, b)
	chs := m["choices"].([]any)
	if st != 200 || len(chs) != 2 {
		t.Fatalf("%d %s", st, b)
	}
	lp := chs[1].(map[string]any)["logprobs"].(map[string]any)["content"].([]any)
	if len(lp) != 3 || len(lp[0].(map[string]any)["top_logprobs"].([]any)) != 2 {
		t.Fatalf("logprobs %s", b)
	}
	if u := m["usage"].(map[string]any); u["completion_tokens"].(float64) != 6 || int(u["prompt_tokens"].(float64)) != prompt {
		t.Fatalf("usage n=2 %v", u)
	}
}

type sseEvent struct {
	raw  string
	data map[string]any
}

func readSSE(t *testing.T, r io.Reader) []sseEvent {
	t.Helper()
	var evs []sseEvent
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		if !strings.HasPrefix(line, "data: ") {
			t.Fatalf("bad SSE line %q", line)
		}
		p := strings.TrimPrefix(line, "data: ")
		ev := sseEvent{raw: p}
		if p != "[DONE]" {
			ev.data = decode(t, []byte(p))
		}
		evs = append(evs, ev)
	}
	return evs
}

func (e *testEnv) stream(t *testing.T, path, body string) []sseEvent {
	t.Helper()
	resp, err := http.Post(e.ts.URL+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	return readSSE(t, resp.Body)
}

func TestChatStreaming(t *testing.T) {
	e := newEnv(t, nil)
	for _, usage := range []bool{false, true} {
		extra := `"stream":true`
		if usage {
			extra += `,"stream_options":{"include_usage":true}`
		}
		evs := e.stream(t, "/v1/chat/completions", chatBody("hello", "hi", extra))
		if evs[len(evs)-1].raw != "[DONE]" {
			t.Fatal("no [DONE]")
		}
		evs = evs[:len(evs)-1]
		id := evs[0].data["id"]
		var text strings.Builder
		for i, ev := range evs {
			d := ev.data
			if d["id"] != id || d["object"] != "chat.completion.chunk" || d["model"] != "hello" {
				t.Fatalf("chunk %d shape %s", i, ev.raw)
			}
			_, hasUsage := d["usage"]
			if hasUsage != usage {
				t.Fatalf("usage key presence %v in %s", hasUsage, ev.raw)
			}
			chs := d["choices"].([]any)
			if len(chs) == 0 {
				if !usage || i != len(evs)-1 {
					t.Fatalf("empty choices chunk %s", ev.raw)
				}
				u := d["usage"].(map[string]any)
				if u["completion_tokens"].(float64) != 12 {
					t.Fatalf("usage %s", ev.raw)
				}
				continue
			}
			if usage && d["usage"] != nil {
				t.Fatalf("usage not null on a choice chunk %s", ev.raw)
			}
			ch := chs[0].(map[string]any)
			delta := ch["delta"].(map[string]any)
			if i == 0 {
				if delta["role"] != "assistant" || delta["content"] != "" || ch["finish_reason"] != nil {
					t.Fatalf("first chunk %s", ev.raw)
				}
				continue
			}
			if _, ok := ch["finish_reason"]; !ok {
				t.Fatalf("finish_reason key missing %s", ev.raw)
			}
			if ch["finish_reason"] != nil {
				if len(delta) != 0 || ch["finish_reason"] != "stop" {
					t.Fatalf("final chunk %s", ev.raw)
				}
				continue
			}
			text.WriteString(delta["content"].(string))
		}
		if text.String() != "hello world" {
			t.Fatalf("streamed %q", text.String())
		}
	}
}

func TestReasoningSplit(t *testing.T) {
	e := newEnv(t, func(c *Config, fm *fakeModel) {
		fm.reasoning = true
		c.Adapters["think"] = writeFakeAdapter(t, filepath.Join(t.TempDir(), "think"), "Let me see.</think>\n\nThe answer is 4.")
		c.Adapters["open"] = writeFakeAdapter(t, filepath.Join(t.TempDir(), "open"), "never closes")
	})
	_, b := e.post(t, "/v1/chat/completions", chatBody("think", "2+2?", ""))
	msg := decode(t, b)["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)
	if msg["reasoning_content"] != "Let me see." || msg["content"] != "The answer is 4." {
		t.Fatalf("split %s", b)
	}
	_, b = e.post(t, "/v1/chat/completions", chatBody("think", "2+2?", `"chat_template_kwargs":{"enable_thinking":false}`))
	msg = decode(t, b)["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)
	if _, ok := msg["reasoning_content"]; ok || msg["content"] != "Let me see.</think>\n\nThe answer is 4." {
		t.Fatalf("thinking off %s", b)
	}
	_, b = e.post(t, "/v1/chat/completions", chatBody("open", "2+2?", ""))
	msg = decode(t, b)["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)
	if msg["reasoning_content"] != "never closes" || msg["content"] != nil {
		t.Fatalf("unclosed think %s", b)
	}
	// a constrained output after a generation prompt that opens <think> is all content
	_, b = e.post(t, "/v1/chat/completions", chatBody("base", "2+2?", `"guided_choice":["yes","no"]`))
	msg = decode(t, b)["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)
	if _, ok := msg["reasoning_content"]; ok || (msg["content"] != "yes" && msg["content"] != "no") {
		t.Fatalf("constrained after <think> %s", b)
	}
	evs := e.stream(t, "/v1/chat/completions", chatBody("think", "2+2?", `"stream":true`))
	var rsn, content strings.Builder
	for _, ev := range evs[1 : len(evs)-1] {
		d := ev.data["choices"].([]any)[0].(map[string]any)["delta"].(map[string]any)
		if v, ok := d["reasoning_content"].(string); ok {
			rsn.WriteString(v)
		}
		if v, ok := d["content"].(string); ok {
			content.WriteString(v)
		}
	}
	if rsn.String() != "Let me see." || content.String() != "The answer is 4." {
		t.Fatalf("stream split %q %q", rsn.String(), content.String())
	}
}

// A template without reasoning support: a completion that opens with <think> (a model fine-tuned on
// reasoning_content data) is still split; plain text passes through unchanged.
func TestReasoningSplitWithoutTemplateSupport(t *testing.T) {
	e := newEnv(t, func(c *Config, fm *fakeModel) {
		c.Adapters["r1"] = writeFakeAdapter(t, filepath.Join(t.TempDir(), "r1"), "<think>\n8 > 2\n</think>\n\n8")
		c.Adapters["plain"] = writeFakeAdapter(t, filepath.Join(t.TempDir(), "plain"), "a </think> b")
	})
	_, b := e.post(t, "/v1/chat/completions", chatBody("r1", "Which is larger, 2 or 8?", ""))
	msg := decode(t, b)["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)
	if msg["reasoning_content"] != "\n8 > 2\n" || msg["content"] != "8" {
		t.Fatalf("split %s", b)
	}
	_, b = e.post(t, "/v1/chat/completions", chatBody("plain", "hi", ""))
	msg = decode(t, b)["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)
	if _, ok := msg["reasoning_content"]; ok || msg["content"] != "a </think> b" {
		t.Fatalf("plain %s", b)
	}
}

func TestStopAndCompletions(t *testing.T) {
	e := newEnv(t, nil)
	_, b := e.post(t, "/v1/chat/completions", chatBody("hello", "hi", `"stop":"wor"`))
	ch := decode(t, b)["choices"].([]any)[0].(map[string]any)
	if ch["message"].(map[string]any)["content"] != "hello " || ch["finish_reason"] != "stop" {
		t.Fatalf("stop %s", b)
	}
	st, b := e.post(t, "/v1/completions", `{"model":"hello","prompt":"say","max_tokens":5,"echo":true}`)
	m := decode(t, b)
	c0 := m["choices"].([]any)[0].(map[string]any)
	if st != 200 || m["object"] != "text_completion" || c0["text"] != "sayhello" || c0["finish_reason"] != "length" {
		t.Fatalf("%d %s", st, b)
	}
	if u := m["usage"].(map[string]any); u["prompt_tokens"].(float64) != 4 || u["completion_tokens"].(float64) != 5 {
		t.Fatalf("usage %s", b)
	}
	st, b = e.post(t, "/v1/completions", `{"model":"base","prompt":["a","b"],"n":2,"logprobs":2,"max_tokens":2}`)
	m = decode(t, b)
	chs := m["choices"].([]any)
	if st != 200 || len(chs) != 4 || chs[3].(map[string]any)["index"].(float64) != 3 {
		t.Fatalf("%d %s", st, b)
	}
	lp := chs[0].(map[string]any)["logprobs"].(map[string]any)
	if len(lp["tokens"].([]any)) != 2 || len(lp["top_logprobs"].([]any)) != 2 {
		t.Fatalf("logprobs %s", b)
	}
	st, b = e.post(t, "/v1/completions", `{"model":"base","prompt":[104,105],"max_tokens":3}`)
	if st != 200 {
		t.Fatalf("%d %s", st, b)
	}
	evs := e.stream(t, "/v1/completions", `{"model":"hello","prompt":"x","stream":true,"stream_options":{"include_usage":true}}`)
	var text strings.Builder
	for _, ev := range evs[:len(evs)-2] {
		text.WriteString(ev.data["choices"].([]any)[0].(map[string]any)["text"].(string))
	}
	if text.String() != "hello world" || evs[len(evs)-1].raw != "[DONE]" || len(evs[len(evs)-2].data["choices"].([]any)) != 0 {
		t.Fatalf("stream completion %q %v", text.String(), evs)
	}
}

func TestErrors(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *fakeModel) { c.MaxBodyBytes = 2000; c.MaxModelLen = 100 })
	cases := []struct {
		path, body string
		status     int
		msg        string
	}{
		{"/v1/chat/completions", `{`, 400, "parse the JSON"},
		{"/v1/chat/completions", ``, 400, "empty"},
		{"/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}]}`, 400, "model"},
		{"/v1/chat/completions", `{"model":"base","messages":[]}`, 400, "messages"},
		{"/v1/chat/completions", `{"model":"base","messages":[{"role":"wizard","content":"x"}]}`, 400, "role"},
		{"/v1/chat/completions", `{"model":"base","messages":[{"role":"user","content":[{"type":"image_url"}]}]}`, 400, "not supported"},
		{"/v1/chat/completions", chatBody("base", "x", `"temperature":3`), 400, "temperature"},
		{"/v1/chat/completions", chatBody("base", "x", `"temperature":"hot"`), 400, "temperature"},
		{"/v1/chat/completions", chatBody("base", "x", `"n":0`), 400, "n must"},
		{"/v1/chat/completions", chatBody("base", "x", `"top_logprobs":3`), 400, "logprobs"},
		{"/v1/chat/completions", chatBody("base", "x", `"stream_options":{"include_usage":true}`), 400, "stream"},
		{"/v1/chat/completions", chatBody("base", "x", `"logit_bias":{"999999":1}`), 400, "logit_bias"},
		{"/v1/chat/completions", chatBody("base", "FAIL-TEMPLATE", ""), 400, "template"},
		{"/v1/chat/completions", chatBody("nope", "x", ""), 404, "does not exist"},
		{"/v1/chat/completions", chatBody("../etc", "x", ""), 404, "does not exist"},
		{"/v1/chat/completions", chatBody("base", strings.Repeat("x", 90), `"max_tokens":20`), 400, "maximum context length is 100"},
		{"/v1/chat/completions", chatBody("base", strings.Repeat("x", 3000), ""), 413, "larger than"},
		{"/v1/completions", `{"model":"base"}`, 400, "prompt"},
		{"/v1/completions", `{"model":"base","prompt":[99999]}`, 400, "out of range"},
		{"/v1/completions", `{"model":"base","prompt":"x","suffix":"y"}`, 400, "suffix"},
		{"/v1/nope", `{}`, 404, "not found"},
	}
	for _, c := range cases {
		st, b := e.post(t, c.path, c.body)
		er := wantError(t, st, b, c.status, c.msg)
		if c.status == 400 && strings.Contains(c.msg, "context") && er["code"] != "context_length_exceeded" {
			t.Fatalf("context code %v", er)
		}
	}
	st, b := e.get(t, "/v1/chat/completions")
	wantError(t, st, b, 405, "Method")
}

func TestAPIKey(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *fakeModel) { c.APIKey = "sekret" })
	st, b := e.post(t, "/v1/chat/completions", chatBody("base", "x", `"max_tokens":1`))
	er := wantError(t, st, b, 401, "API key")
	if er["code"] != "invalid_api_key" {
		t.Fatal(er)
	}
	st, b = e.post(t, "/v1/chat/completions", chatBody("base", "x", `"max_tokens":1`), "Authorization", "Bearer wrong")
	wantError(t, st, b, 401, "API key")
	st, b = e.post(t, "/v1/chat/completions", chatBody("base", "x", `"max_tokens":1`), "Authorization", "Bearer sekret")
	if st != 200 {
		t.Fatalf("%d %s", st, b)
	}
	if st, _ := e.get(t, "/health"); st != 200 {
		t.Fatal("health needs no key")
	}
}

func TestModelsAndLoRALifecycle(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *fakeModel) { c.MaxLoadedAdapters = 10 })
	st, b := e.get(t, "/v1/models")
	m := decode(t, b)
	data := m["data"].([]any)
	if st != 200 || m["object"] != "list" || len(data) != 4 {
		t.Fatalf("%d %s", st, b)
	}
	byID := map[string]map[string]any{}
	for _, d := range data {
		c := d.(map[string]any)
		byID[c["id"].(string)] = c
		for _, k := range []string{"id", "object", "created", "owned_by", "root", "parent"} {
			if _, ok := c[k]; !ok {
				t.Fatalf("card lacks %s: %v", k, c)
			}
		}
	}
	if byID["base"]["parent"] != nil || byID["base"]["max_model_len"].(float64) != 512 || byID["hello"]["parent"] != "base" || byID["lazy"]["parent"] != "base" {
		t.Fatalf("lineage %s", b)
	}
	if st, b := e.get(t, "/v1/models/hello"); st != 200 || decode(t, b)["id"] != "hello" {
		t.Fatalf("%d %s", st, b)
	}
	st, b = e.get(t, "/v1/models/zzz")
	wantError(t, st, b, 404, "zzz")

	// lazy load from --adapter-dir
	_, b = e.post(t, "/v1/chat/completions", chatBody("lazy", "x", ""))
	if c := decode(t, b)["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)["content"]; c != "lazy output" {
		t.Fatalf("lazy %s", b)
	}
	// vLLM load/unload contract
	st, b = e.post(t, "/v1/load_lora_adapter", `{"lora_name":"x"}`)
	wantError(t, st, b, 400, "Both 'lora_name' and 'lora_path' must be provided.")
	outside := writeFakeAdapter(t, filepath.Join(t.TempDir(), "out"), "outside")
	st, b = e.post(t, "/v1/load_lora_adapter", fmt.Sprintf(`{"lora_name":"out","lora_path":%q}`, outside))
	wantError(t, st, b, 400, "allow-any-adapter-path")
	inside := writeFakeAdapter(t, filepath.Join(e.dir, "lib", "v2"), "version two")
	st, b = e.post(t, "/v1/load_lora_adapter", fmt.Sprintf(`{"lora_name":"hello","lora_path":%q}`, inside))
	if st != 200 || string(b) != "Success: LoRA adapter 'hello' added successfully." {
		t.Fatalf("%d %s", st, b)
	}
	_, b = e.post(t, "/v1/chat/completions", chatBody("hello", "x", ""))
	if c := decode(t, b)["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)["content"]; c != "version two" {
		t.Fatalf("replaced adapter still old: %s", b)
	}
	bad := writeFakeAdapter(t, filepath.Join(e.dir, "lib", "bad"), "")
	writeFile(t, filepath.Join(bad, "mismatch"), "adapter rank/shape mismatch: q_proj in 64 vs base 32")
	st, b = e.post(t, "/v1/load_lora_adapter", fmt.Sprintf(`{"lora_name":"bad","lora_path":%q}`, bad))
	wantError(t, st, b, 400, "mismatch")
	st, b = e.post(t, "/v1/load_lora_adapter", fmt.Sprintf(`{"lora_name":"ghost","lora_path":%q}`, filepath.Join(e.dir, "lib", "none")))
	wantError(t, st, b, 404, "No adapter found")
	st, b = e.post(t, "/v1/unload_lora_adapter", `{"lora_name":"hello"}`)
	if st != 200 || string(b) != "Success: LoRA adapter 'hello' removed successfully." {
		t.Fatalf("%d %s", st, b)
	}
	st, b = e.post(t, "/v1/chat/completions", chatBody("hello", "x", ""))
	wantError(t, st, b, 404, "hello")
	st, b = e.post(t, "/v1/unload_lora_adapter", `{"lora_name":"hello"}`)
	wantError(t, st, b, 404, "cannot be found")
	st, b = e.post(t, "/v1/unload_lora_adapter", `{}`)
	wantError(t, st, b, 400, "lora_name")
}

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := osWriteFile(p, s); err != nil {
		t.Fatal(err)
	}
}

func TestUnloadWaitsForInFlight(t *testing.T) {
	e := newEnv(t, func(c *Config, fm *fakeModel) { fm.block = make(chan struct{}) })
	done := make(chan []byte)
	go func() {
		_, b := e.post(t, "/v1/chat/completions", chatBody("hello", "x", ""))
		done <- b
	}()
	waitUntil(t, func() bool { return e.srv.eng.Stats().Active == 1 })
	unloaded := make(chan int)
	go func() {
		st, _ := e.post(t, "/v1/unload_lora_adapter", `{"lora_name":"hello"}`)
		unloaded <- st
	}()
	waitUntil(t, func() bool { return !e.srv.reg.Has("hello") })
	select {
	case <-unloaded:
		t.Fatal("unload returned before the in-flight request finished")
	case <-time.After(30 * time.Millisecond):
	}
	e.feed(20)
	b := <-done
	if c := decode(t, b)["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)["content"]; c != "hello world" {
		t.Fatalf("in-flight request changed adapter: %s", b)
	}
	if st := <-unloaded; st != 200 {
		t.Fatal(st)
	}
}

func TestQueueFullAndDisconnect(t *testing.T) {
	e := newEnv(t, func(c *Config, fm *fakeModel) {
		fm.block = make(chan struct{})
		c.MaxBatch, c.MaxQueue = 1, 1
	})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "POST", e.ts.URL+"/v1/chat/completions", strings.NewReader(chatBody("base", "x", `"stream":true`)))
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	waitUntil(t, func() bool { return e.srv.eng.Stats().Active == 1 })
	go func() {
		resp, err := http.Post(e.ts.URL+"/v1/completions", "application/json", strings.NewReader(`{"model":"base","prompt":"q","max_tokens":1}`))
		if err == nil {
			resp.Body.Close()
		}
	}()
	waitUntil(t, func() bool { return e.srv.eng.Stats().Waiting == 1 })
	st, b := e.post(t, "/v1/chat/completions", chatBody("base", "x", ""))
	wantError(t, st, b, 429, "queue is full")
	cancel() // the streaming client goes away: its slot frees at the next step
	e.feed(1 << 20)
	waitUntil(t, func() bool { s := e.srv.eng.Stats(); return s.Active == 0 && s.Waiting == 0 })
}

func TestHealthMetricsShutdown(t *testing.T) {
	e := newEnv(t, nil)
	if st, _ := e.get(t, "/health"); st != 200 {
		t.Fatal(st)
	}
	e.post(t, "/v1/chat/completions", chatBody("hello", "x", ""))
	st, b := e.get(t, "/metrics")
	for _, want := range []string{"lorakit_http_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 1",
		"lorakit_generation_tokens_total 12", "lorakit_queue_depth 0", "lorakit_loaded_adapters 2",
		"lorakit_time_to_first_token_seconds_count 1", "lorakit_inter_token_latency_seconds_count 11",
		"# TYPE lorakit_batch_size histogram", "lorakit_batch_size_bucket{le=\"+Inf\"}"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Fatalf("metrics lack %q:\n%s", want, b)
		}
	}
	_ = st
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = e.srv.Shutdown(context.Background()) }()
	wg.Wait()
	st, b = e.post(t, "/v1/chat/completions", chatBody("base", "x", ""))
	wantError(t, st, b, 503, "shutting down")
	if st, _ := e.get(t, "/health"); st != 503 {
		t.Fatal(st)
	}
}

// feed lets up to n blocked Forward calls through, in the background.
func (e *testEnv) feed(n int) {
	go func() {
		for i := 0; i < n; i++ {
			select {
			case e.fm.block <- struct{}{}:
			case <-e.fm.done:
				return
			}
		}
	}()
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

func newTS(t *testing.T, s *Server) *httptest.Server {
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts
}

// postNoT posts a chat request without a *testing.T (for goroutines).
func (e *testEnv) postNoT(body string) (int, []byte) {
	resp, err := http.Post(e.ts.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func decodeMap(b []byte) map[string]any {
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

func TestStartDrainsOnCancel(t *testing.T) {
	fm := &fakeModel{done: make(chan struct{}), block: make(chan struct{})}
	defer close(fm.done)
	dir := t.TempDir()
	s, err := New(Config{Model: fm, ModelName: "base", Adapters: map[string]string{"hello": writeFakeAdapter(t, filepath.Join(dir, "hello"), "hello world")}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan error, 1)
	go func() { started <- s.Start(ctx, ln) }()
	got := make(chan string, 1)
	go func() {
		resp, err := http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(chatBody("hello", "x", "")))
		if err != nil {
			got <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		c, _ := decodeMap(b)["choices"].([]any)
		if len(c) == 0 {
			got <- string(b)
			return
		}
		got <- c[0].(map[string]any)["message"].(map[string]any)["content"].(string)
	}()
	waitUntil(t, func() bool { return s.eng.Stats().Active == 1 })
	cancel() // SIGTERM
	waitUntil(t, func() bool { return s.shutting.Load() })
	resp, err := http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(chatBody("base", "x", "")))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("during drain: %d", resp.StatusCode)
	}
	env := &testEnv{fm: fm}
	env.feed(1 << 20)
	if g := <-got; g != "hello world" {
		t.Fatalf("in-flight request cut by shutdown: %q", g)
	}
	if err := <-started; err != nil {
		t.Fatal(err)
	}
}

func TestStreamingN2AndLogprobs(t *testing.T) {
	e := newEnv(t, nil)
	evs := e.stream(t, "/v1/chat/completions", chatBody("hello", "hi", `"stream":true,"n":2,"logprobs":true,"top_logprobs":1,"stream_options":{"include_usage":true}`))
	texts := map[float64]string{}
	finishes, roles, lps := 0, 0, 0
	for _, ev := range evs[:len(evs)-1] {
		chs := ev.data["choices"].([]any)
		if len(chs) == 0 {
			if ev.data["usage"].(map[string]any)["completion_tokens"].(float64) != 24 {
				t.Fatalf("usage %s", ev.raw)
			}
			continue
		}
		ch := chs[0].(map[string]any)
		d := ch["delta"].(map[string]any)
		if d["role"] == "assistant" {
			roles++
			continue
		}
		if ch["finish_reason"] != nil {
			finishes++
			continue
		}
		if lp, ok := ch["logprobs"].(map[string]any); ok {
			lps += len(lp["content"].([]any))
		}
		texts[ch["index"].(float64)] += d["content"].(string)
	}
	if roles != 2 || finishes != 2 || texts[0] != "hello world" || texts[1] != "hello world" || lps != 24 {
		t.Fatalf("roles %d finishes %d texts %v logprobs %d", roles, finishes, texts, lps)
	}
	evs = e.stream(t, "/v1/completions", `{"model":"hello","prompt":"P:","stream":true,"echo":true,"max_tokens":5}`)
	var sb strings.Builder
	for _, ev := range evs[:len(evs)-1] {
		sb.WriteString(ev.data["choices"].([]any)[0].(map[string]any)["text"].(string))
	}
	if sb.String() != "P:hello" {
		t.Fatalf("echo stream %q", sb.String())
	}
}
