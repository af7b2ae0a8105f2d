package openai

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestReasoningSplitterStreaming(t *testing.T) {
	cases := []struct {
		text       string
		start      bool
		rsn, cont  string
		nilR, nilC bool
	}{
		{"<think>plan</think>\n\nanswer", false, "plan", "answer", false, false},
		{"  <think>a</think>b", false, "a", "b", false, false},
		{"plain answer", false, "", "plain answer", true, false},
		{"<thin", false, "", "<thin", true, false},
		{"x <think>y</think>", false, "", "x <think>y</think>", true, false},
		{"reason</think>done", true, "reason", "done", false, false},
		{"never closed", true, "never closed", "", false, true},
		{"<think>open only", false, "open only", "", false, true},
		{"</think>", true, "", "", false, false},
	}
	for _, c := range cases {
		// whole
		r, ct := SplitReasoning(c.text, c.start)
		if (r == nil) != c.nilR || (ct == nil) != c.nilC {
			t.Fatalf("%q: nil-ness reasoning %v content %v", c.text, r == nil, ct == nil)
		}
		if r != nil && *r != c.rsn || ct != nil && *ct != c.cont {
			t.Fatalf("%q: got %v / %v", c.text, deref(r), deref(ct))
		}
		// one byte at a time
		s := NewReasoningSplitter(c.start)
		var rb, cb strings.Builder
		for i := 0; i < len(c.text); i++ {
			a, b := s.Add(c.text[i : i+1])
			rb.WriteString(a)
			cb.WriteString(b)
		}
		a, b := s.Flush()
		rb.WriteString(a)
		cb.WriteString(b)
		if rb.String() != c.rsn || cb.String() != c.cont {
			t.Fatalf("%q streamed: %q / %q", c.text, rb.String(), cb.String())
		}
	}
	if !PromptOpensThink("<|im_start|>assistant\n<think>\n") || PromptOpensThink("assistant\n") {
		t.Fatal("PromptOpensThink")
	}
}

func deref(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}

func TestDecodeChatFields(t *testing.T) {
	c, e := DecodeChat([]byte(`{"model":"m","messages":[{"role":"developer","content":"sys"},
		{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
		{"role":"assistant","content":null,"reasoning_content":"r"}],
		"max_tokens":5,"max_completion_tokens":7,"temperature":0,"top_p":0.5,"top_k":3,"min_p":0.1,"stop":"x",
		"seed":9,"presence_penalty":1,"frequency_penalty":-1,"n":2,"logprobs":true,"top_logprobs":4,
		"stream":true,"stream_options":{"include_usage":true},"logit_bias":{"5":-100},"user":"u","metadata":{}}`), 100)
	if e != nil {
		t.Fatal(e)
	}
	s := c.Sampling
	if c.Messages[0].Role != "system" || c.Messages[1].Content != "ab" || c.Messages[2].ReasoningContent != "r" ||
		s.MaxTokens != 7 || s.Temperature != 0 || s.TopP != 0.5 || s.TopK != 3 || s.N != 2 || *s.Seed != 9 ||
		len(s.Stop) != 1 || s.LogitBias[5] != -100 || !s.Logprobs || s.TopLogprobs != 4 || !c.IncludeUsage {
		t.Fatalf("%+v %+v", c, s)
	}
	cm, e := DecodeCompletion([]byte(`{"model":"m","prompt":[[1,2],[3]]}`), 10)
	if e != nil || len(cm.Prompts) != 2 || cm.Sampling.MaxTokens != DefaultCompletionMaxTokens {
		t.Fatal(cm, e)
	}
	b, _ := json.Marshal(ErrorResponse{Error: ModelNotFound("x")})
	if string(b) != `{"error":{"message":"The model `+"`x`"+` does not exist.","type":"invalid_request_error","param":"model","code":"model_not_found"}}` {
		t.Fatal(string(b))
	}
}

// FuzzDecode: any body either decodes or yields an OpenAI error with a 4xx status; never a panic.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`))
	f.Add([]byte(`{"model":"m","prompt":[1,2,3],"logprobs":2,"echo":true}`))
	f.Add([]byte(`{"model":"m","prompt":["a","b"],"n":3,"stop":["x","y"],"logit_bias":{"1":5}}`))
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"}]}],"temperature":1e309}`))
	f.Add([]byte(`{"lora_name":"a","lora_path":"/x"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		check := func(e *Error) {
			if e != nil && (e.Status < 400 || e.Status > 499 || e.Message == "" || e.Type == "") {
				t.Fatalf("bad error %+v", e)
			}
		}
		c, e := DecodeChat(body, 300)
		check(e)
		if e == nil && (c.Model == "" || len(c.Messages) == 0 || c.Sampling.N < 1) {
			t.Fatalf("accepted invalid chat %+v", c)
		}
		cm, e := DecodeCompletion(body, 300)
		check(e)
		if e == nil {
			for _, p := range cm.Prompts {
				for _, id := range p.IDs {
					if id < 0 || id >= 300 {
						t.Fatalf("token %d accepted", id)
					}
				}
			}
		}
		_, e = DecodeLoad(body)
		check(e)
		_, e = DecodeUnload(body)
		check(e)
	})
}
