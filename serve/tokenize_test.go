package serve

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestTokenizeDetokenizeVersion(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *fakeModel) { c.Version = "v9.9.9" })
	st, b := e.post(t, "/tokenize", `{"model":"hello","prompt":"hi"}`)
	var tok struct {
		Count       int      `json:"count"`
		MaxModelLen int      `json:"max_model_len"`
		Tokens      []int    `json:"tokens"`
		TokenStrs   []string `json:"token_strs"`
	}
	if st != 200 || json.Unmarshal(b, &tok) != nil || tok.Count != 3 || tok.Tokens[0] != fBOS || tok.Tokens[1] != 'h' || tok.MaxModelLen == 0 {
		t.Fatalf("%d %s", st, b)
	}
	st, b = e.post(t, "/tokenize", `{"model":"lazy","prompt":"hi","add_special_tokens":false,"return_token_strs":true}`)
	if st != 200 || json.Unmarshal(b, &tok) != nil || tok.Count != 2 || strings.Join(tok.TokenStrs, "") != "hi" {
		t.Fatalf("%d %s", st, b)
	}
	st, b = e.post(t, "/tokenize", `{"model":"base","messages":[{"role":"user","content":"yo"}]}`)
	if st != 200 || json.Unmarshal(b, &tok) != nil || tok.Count == 0 || tok.Tokens[0] == fBOS || !strings.Contains(e.fm.lastPrompt, "yo") {
		t.Fatalf("%d %s", st, b)
	}
	st, b = e.post(t, "/detokenize", `{"model":"base","tokens":[257,104,105]}`)
	if st != 200 || string(b) != `{"prompt":"hi"}`+"\n" && string(b) != `{"prompt":"hi"}` {
		t.Fatalf("%d %s", st, b)
	}
	for _, c := range []struct {
		path, body string
		status     int
		msg        string
	}{
		{"/tokenize", `{"model":"nope","prompt":"x"}`, 404, "does not exist"},
		{"/detokenize", `{"model":"base","tokens":[999]}`, 400, "not a token id"},
		{"/tokenize", `{"model":"base"}`, 400, "prompt or messages"},
	} {
		st, b := e.post(t, c.path, c.body)
		wantError(t, st, b, c.status, c.msg)
	}
	st, b = e.get(t, "/version")
	if st != 200 || !strings.Contains(string(b), `"version":"v9.9.9"`) {
		t.Fatalf("%d %s", st, b)
	}
}
