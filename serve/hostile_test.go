package serve

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Requests from issue 14 ("the server under hostile or unlucky traffic"): each must get a clear 4xx, never a
// 500, a leak of Go internals, or work the server cannot bound.

func TestErrorsNameWireFieldsNotGoTypes(t *testing.T) {
	e := newEnv(t, nil)
	for _, c := range []struct{ body, param string }{
		{chatBody("base", "x", `"temperature":"hot"`), "temperature"},
		{chatBody("base", "x", `"logit_bias":{"5":"x"}`), "logit_bias"},
		{chatBody("base", "x", `"n":"two"`), "n"},
		{`[]`, ""},
		{`"a string"`, ""},
	} {
		st, b := e.post(t, "/v1/chat/completions", c.body)
		er := wantError(t, st, b, 400, "")
		if p, _ := er["param"].(string); p != c.param {
			t.Errorf("%s: param %q, want %q", c.body, p, c.param)
		}
		for _, leak := range []string{"samplingFields", "openai.", "ChatCompletionRequest", "float64", "main."} {
			if strings.Contains(string(b), leak) {
				t.Errorf("%s: reply leaks %q: %s", c.body, leak, b)
			}
		}
	}
}

func TestLogitBiasKeysMustBeCanonical(t *testing.T) {
	e := newEnv(t, nil)
	for _, k := range []string{"+5", "05", " 5", "5.0", "-0"} {
		st, b := e.post(t, "/v1/chat/completions", chatBody("base", "x", `"max_tokens":1,"logit_bias":{"`+k+`":10}`))
		wantError(t, st, b, 400, "logit_bias")
	}
	// "+5" and "5" together: refused, not an undefined winner.
	st, b := e.post(t, "/v1/chat/completions", chatBody("base", "x", `"max_tokens":1,"logit_bias":{"5":100,"+5":-100}`))
	wantError(t, st, b, 400, "plain decimal")
	if st, b := e.post(t, "/v1/chat/completions", chatBody("base", "x", `"max_tokens":1,"logit_bias":{"5":1,"0":-1}`)); st != 200 {
		t.Fatalf("canonical keys refused: %d %s", st, b)
	}
}

func TestBearerSchemeAndWWWAuthenticate(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *fakeModel) { c.APIKey = "sekret" })
	for _, scheme := range []string{"Bearer", "bearer", "BEARER"} {
		if st, b := e.post(t, "/v1/chat/completions", chatBody("base", "x", `"max_tokens":1`), "Authorization", scheme+" sekret"); st != 200 {
			t.Fatalf("%s: %d %s", scheme, st, b)
		}
	}
	for _, h := range []string{"", "Basic sekret", "Bearer", "Bearersekret", "Bearer wrong"} {
		req, _ := http.NewRequest("POST", e.ts.URL+"/v1/chat/completions", strings.NewReader(chatBody("base", "x", "")))
		if h != "" {
			req.Header.Set("Authorization", h)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		wantError(t, resp.StatusCode, b, 401, "API key")
		if w := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(w, "Bearer") {
			t.Fatalf("%q: WWW-Authenticate %q", h, w)
		}
	}
}

func TestTemplateKwargsCannotOverrideReservedVariables(t *testing.T) {
	e := newEnv(t, nil)
	for _, k := range []string{"messages", "add_generation_prompt", "bos_token", "eos_token", "tools", "documents", "lorakit_out"} {
		st, b := e.post(t, "/v1/chat/completions", chatBody("base", "x", `"chat_template_kwargs":{"enable_thinking":false,"`+k+`":[]}`))
		er := wantError(t, st, b, 400, k)
		if er["param"] != "chat_template_kwargs."+k {
			t.Fatalf("%s: param %v", k, er["param"])
		}
	}
	if st, b := e.post(t, "/v1/chat/completions", chatBody("base", "x", `"max_tokens":1,"chat_template_kwargs":{"enable_thinking":false}`)); st != 200 {
		t.Fatalf("a free variable is refused: %d %s", st, b)
	}
}

func TestMaxTokensDoesNotOverflowTheContextCheck(t *testing.T) {
	e := newEnv(t, nil)
	for _, c := range []struct{ path, body, param string }{
		{"/v1/chat/completions", chatBody("base", "x", `"max_tokens":9223372036854775807`), "messages"},
		{"/v1/chat/completions", chatBody("base", "x", `"max_completion_tokens":9223372036854775807`), "messages"},
		{"/v1/completions", `{"model":"base","prompt":"x","max_tokens":9223372036854775807}`, "prompt"},
	} {
		st, b := e.post(t, c.path, c.body)
		er := wantError(t, st, b, 400, "maximum context length")
		if er["code"] != "context_length_exceeded" || er["param"] != c.param {
			t.Fatalf("%s: %v", c.body, er)
		}
	}
}

func TestCompletionPromptTooLongNamesPrompt(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *fakeModel) { c.MaxModelLen = 100 })
	st, b := e.post(t, "/v1/completions", `{"model":"base","prompt":"`+strings.Repeat("x", 95)+`","max_tokens":20}`)
	er := wantError(t, st, b, 400, "in the prompt")
	if er["param"] != "prompt" || strings.Contains(er["message"].(string), "messages") {
		t.Fatalf("%v", er)
	}
}

// metricsLine returns the value of a metrics line starting with prefix ("" if absent).
func metricsLine(t *testing.T, e *testEnv, prefix string) string {
	t.Helper()
	_, b := e.get(t, "/metrics")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, prefix) {
			return strings.TrimSpace(strings.TrimPrefix(l, prefix))
		}
	}
	return ""
}

func TestClientDisconnectCountsAs499(t *testing.T) {
	e := newEnv(t, func(c *Config, fm *fakeModel) { fm.block = make(chan struct{}) })
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan struct{})
	go func() {
		defer close(got)
		req, _ := http.NewRequestWithContext(ctx, "POST", e.ts.URL+"/v1/chat/completions", strings.NewReader(chatBody("base", "x", `"stream":true`)))
		if resp, err := http.DefaultClient.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	waitUntil(t, func() bool { return e.srv.eng.Stats().Active == 1 })
	cancel()
	<-got
	e.feed(1 << 20)
	waitUntil(t, func() bool {
		return metricsLine(t, e, `lorakit_http_requests_total{route="/v1/chat/completions",status="499"}`) == "1"
	})
	if v := metricsLine(t, e, `lorakit_http_requests_total{route="/v1/chat/completions",status="200"}`); v != "" {
		t.Fatalf("a disconnected stream counted as 200 (%s)", v)
	}
}

func TestCancelledUnloadIsNot500(t *testing.T) {
	e := newEnv(t, func(c *Config, fm *fakeModel) { fm.block = make(chan struct{}) })
	go e.postNoT(chatBody("hello", "x", ""))
	waitUntil(t, func() bool { return e.srv.eng.Stats().Active == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", e.ts.URL+"/v1/unload_lora_adapter", bytes.NewReader([]byte(`{"lora_name":"hello"}`)))
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("unload answered %d while a request still uses the adapter", resp.StatusCode)
	}
	waitUntil(t, func() bool {
		return metricsLine(t, e, `lorakit_http_requests_total{route="/v1/unload_lora_adapter",status="499"}`) == "1"
	})
	if v := metricsLine(t, e, `lorakit_http_requests_total{route="/v1/unload_lora_adapter",status="500"}`); v != "" {
		t.Fatalf("cancelled unload counted as 500")
	}
	e.feed(1 << 20)
}
