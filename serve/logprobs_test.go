package serve

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/lorakit/lorakit/internal/testenv"
	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/serve/backend"
)

func storiesEnv(t *testing.T) *testEnv {
	t.Helper()
	sh := testenv.Testdata(t)
	m, err := models.Load(filepath.Join(sh, "models", "stories260K"), models.LoadOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	srv, err := New(Config{Model: backend.FromModel(m), ModelName: "stories"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return &testEnv{srv: srv, ts: newTS(t, srv)}
}

type completionLP struct {
	Choices []struct {
		Text     string `json:"text"`
		Logprobs struct {
			Tokens        []string             `json:"tokens"`
			TokenLogprobs []*float64           `json:"token_logprobs"`
			TopLogprobs   []map[string]float64 `json:"top_logprobs"`
			TextOffset    []int                `json:"text_offset"`
		} `json:"logprobs"`
	} `json:"choices"`
}

// TestStoriesLogprobStrings: on the SentencePiece stories260K model, token strings join to the text (leading
// spaces kept, byte-fallback characters whole), text_offset points at each token, top_logprobs hold the
// requested count, echo gives the prompt's logprobs with the first null, and chat logprobs carry bytes.
func TestStoriesLogprobStrings(t *testing.T) {
	e := storiesEnv(t)
	for _, c := range []struct{ prompt, extra string }{
		{"Once upon a time, there was", `"temperature":0`},
		{"Lily saw a 🐱 and", `"temperature":1.3,"seed":5`},
		{"The dog", `"temperature":1.5,"seed":9,"echo":true`},
	} {
		st, b := e.post(t, "/v1/completions", fmt.Sprintf(`{"model":"stories","prompt":%q,"max_tokens":40,"logprobs":5,%s}`, c.prompt, c.extra))
		var out completionLP
		if st != 200 || json.Unmarshal(b, &out) != nil {
			t.Fatalf("%d %s", st, b)
		}
		ch := out.Choices[0]
		lp := ch.Logprobs
		if got := strings.Join(lp.Tokens, ""); got != ch.Text {
			t.Errorf("%q: tokens join to %q, text %q", c.prompt, got, ch.Text)
		}
		off := 0
		for i, tok := range lp.Tokens {
			if lp.TextOffset[i] != off {
				t.Errorf("%q: text_offset[%d] = %d, want %d", c.prompt, i, lp.TextOffset[i], off)
			}
			off += utf8.RuneCountInString(tok)
			first := i == 0 && strings.Contains(c.extra, "echo")
			if first != (lp.TokenLogprobs[i] == nil) || first != (lp.TopLogprobs[i] == nil) {
				t.Errorf("%q: token %d logprob %v top %v (only an echoed first token has none)", c.prompt, i, lp.TokenLogprobs[i], lp.TopLogprobs[i])
			}
			if !first && len(lp.TopLogprobs[i]) != 5 {
				t.Errorf("%q: token %d has %d top logprobs, want 5: %v", c.prompt, i, len(lp.TopLogprobs[i]), lp.TopLogprobs[i])
			}
		}
		if strings.Contains(c.extra, "echo") && !strings.HasPrefix(ch.Text, c.prompt) {
			t.Errorf("echo text %q", ch.Text)
		}
	}
	// /tokenize and /detokenize round trip, the BOS added by default
	st, b := e.post(t, "/tokenize", `{"model":"stories","prompt":"Once upon a time"}`)
	var tk struct {
		Tokens []int `json:"tokens"`
	}
	if st != 200 || json.Unmarshal(b, &tk) != nil || tk.Tokens[0] != 1 {
		t.Fatalf("tokenize: %d %s", st, b)
	}
	ids, _ := json.Marshal(tk.Tokens)
	if st, b = e.post(t, "/detokenize", `{"model":"stories","tokens":`+string(ids)+`}`); st != 200 || !strings.Contains(string(b), `"prompt":"Once upon a time"`) {
		t.Fatalf("detokenize: %d %s", st, b)
	}
	// echo with max_tokens 0 scores the prompt
	st, b = e.post(t, "/v1/completions", `{"model":"stories","prompt":"Tom had a red ball.","max_tokens":0,"echo":true,"logprobs":1}`)
	var out completionLP
	if st != 200 || json.Unmarshal(b, &out) != nil || out.Choices[0].Text != "Tom had a red ball." ||
		strings.Join(out.Choices[0].Logprobs.Tokens, "") != "Tom had a red ball." || out.Choices[0].Logprobs.TokenLogprobs[1] == nil {
		t.Fatalf("score: %d %s", st, b)
	}

	st, b = e.post(t, "/v1/chat/completions", chatBody("stories", "Tell me a story", `"max_tokens":40,"temperature":1.4,"seed":3,"logprobs":true,"top_logprobs":4`))
	var chat struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
			Logprobs struct {
				Content []struct {
					Token       string `json:"token"`
					Bytes       []int  `json:"bytes"`
					TopLogprobs []struct {
						Token string `json:"token"`
					} `json:"top_logprobs"`
				} `json:"content"`
			} `json:"logprobs"`
		} `json:"choices"`
	}
	if st != 200 || json.Unmarshal(b, &chat) != nil {
		t.Fatalf("%d %s", st, b)
	}
	var sb strings.Builder
	var raw []byte
	for _, tl := range chat.Choices[0].Logprobs.Content {
		sb.WriteString(tl.Token)
		for _, x := range tl.Bytes {
			raw = append(raw, byte(x))
		}
		seen := map[string]bool{}
		for _, a := range tl.TopLogprobs {
			if seen[a.Token] {
				t.Errorf("top_logprobs repeat %q", a.Token)
			}
			seen[a.Token] = true
		}
		if len(tl.TopLogprobs) != 4 {
			t.Errorf("%d top logprobs, want 4", len(tl.TopLogprobs))
		}
	}
	if got := chat.Choices[0].Message.Content; sb.String() != got || string(raw) != got {
		t.Errorf("chat tokens join to %q, bytes to %q, content %q", sb.String(), raw, got)
	}
}
