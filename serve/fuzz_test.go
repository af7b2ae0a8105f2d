package serve

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzHandlers posts arbitrary bodies to every POST endpoint of a server on the fake model: the answer is 200 or
// an OpenAI error object with a 4xx status; never a panic, never a 5xx.
func FuzzHandlers(f *testing.F) {
	f.Add(0, []byte(`{"model":"hello","messages":[{"role":"user","content":"hi"}],"max_tokens":3}`))
	f.Add(0, []byte(`{"model":"base","messages":[{"role":"user","content":"hi"}],"stream":true,"n":2,"stop":["a"]}`))
	f.Add(1, []byte(`{"model":"base","prompt":[1,2,3],"max_tokens":2,"logprobs":3,"echo":true}`))
	f.Add(2, []byte(`{"lora_name":"x","lora_path":"/etc"}`))
	f.Add(3, []byte(`{"lora_name":"shift"}`))
	f.Add(0, []byte(`{"model":"hello","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"stream":true}`))
	fm := &fakeModel{done: make(chan struct{}), toolParser: "hermes"}
	dir := f.TempDir()
	s, err := New(Config{Model: fm, ModelName: "base", MaxModelLen: 64,
		Adapters: map[string]string{"hello": writeFakeAdapter(f, filepath.Join(dir, "hello"), "hello world"),
			"shift": writeFakeAdapter(f, filepath.Join(dir, "shift"), "")}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	paths := []string{"/v1/chat/completions", "/v1/completions", "/v1/load_lora_adapter", "/v1/unload_lora_adapter"}
	f.Fuzz(func(t *testing.T, which int, body []byte) {
		path := paths[(which%len(paths)+len(paths))%len(paths)]
		if path == "/v1/unload_lora_adapter" && strings.Contains(string(body), "hello") {
			return // keep the fixture adapter
		}
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", path, strings.NewReader(string(body)))
		s.Handler().ServeHTTP(rec, req)
		if rec.Code == 200 {
			return
		}
		if rec.Code < 400 || rec.Code > 499 {
			t.Fatalf("%s %q → %d %s", path, body, rec.Code, rec.Body.String())
		}
		var er struct {
			Error *struct {
				Message string `json:"message"`
				Type    string `json:"type"`
			} `json:"error"`
		}
		if json.Unmarshal(rec.Body.Bytes(), &er) != nil || er.Error == nil || er.Error.Message == "" || er.Error.Type == "" {
			t.Fatalf("%s %q → %d without an OpenAI error: %s", path, body, rec.Code, rec.Body.String())
		}
	})
}
