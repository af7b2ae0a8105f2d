package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/grammar/grammartest"
	"github.com/lorakit/lorakit/models/testmodel"
	"github.com/lorakit/lorakit/serve/backend"
)

// tinyServer serves a random-weight test model with two random adapters.
func tinyServer(t *testing.T, maxPositions int) *testEnv {
	t.Helper()
	dir := t.TempDir()
	o := testmodel.Default()
	o.MaxPositions = maxPositions
	if err := testmodel.Write(filepath.Join(dir, "model"), o); err != nil {
		t.Fatal(err)
	}
	m, err := models.Load(filepath.Join(dir, "model"), models.LoadOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	adapters := map[string]string{}
	for i, n := range []string{"a1", "a2"} {
		p := filepath.Join(dir, n)
		writeRandomAdapter(t, m, p, int64(i+11))
		adapters[n] = p
	}
	srv, err := New(Config{Model: backend.FromModel(m), ModelName: "tiny", Adapters: adapters, MaxBatch: 32})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return &testEnv{srv: srv, ts: newTS(t, srv)}
}

// TestStructuredOutputsValidate is the property test of constrained decoding: random schemas, a random-weight
// model (it cannot help: every valid character comes from the mask), temperature 1.5 and other samplers, the
// base model and two adapters in one batch, and an independent JSON Schema validator on every completion.
// LORAKIT_STRUCTURED_SCHEMAS=200 runs the full 200 schemas × 10 seeds.
func TestStructuredOutputsValidate(t *testing.T) {
	schemas, seeds := 20, 3
	if n, err := strconv.Atoi(os.Getenv("LORAKIT_STRUCTURED_SCHEMAS")); err == nil && n > 0 {
		schemas, seeds = n, 10
	}
	e := tinyServer(t, 4096)
	samplers := []string{`"temperature":1.5`, `"temperature":1.5,"top_p":0.9,"presence_penalty":1`,
		`"temperature":1.5,"top_k":20,"min_p":0.01`, `"temperature":0`, `"temperature":1,"frequency_penalty":0.5,"logprobs":true,"top_logprobs":2`}
	models := []string{"tiny", "a1", "a2"}
	r := rand.New(rand.NewPCG(7, 7))
	var mu sync.Mutex
	stops, lengths := 0, 0
	for i := range schemas {
		src := grammartest.RandomSchema(r)
		sch := validator(t, src)
		var wg sync.WaitGroup
		for seed := range seeds {
			wg.Add(1)
			go func() {
				defer wg.Done()
				field := fmt.Sprintf(`"response_format":{"type":"json_schema","json_schema":{"name":"s","strict":true,"schema":%s}}`, src)
				if seed%2 == 1 {
					field = fmt.Sprintf(`"guided_json":%s`, src)
				}
				body := chatBody(models[(i+seed)%3], "give me JSON", fmt.Sprintf(`%s,"seed":%d,"max_tokens":3000,%s`,
					samplers[(i*seeds+seed)%len(samplers)], seed, field))
				st, b := e.postNoT(body)
				if st != 200 {
					t.Errorf("schema %s: %d %s", src, st, b)
					return
				}
				ch := decodeMap(b)["choices"].([]any)[0].(map[string]any)
				content, _ := ch["message"].(map[string]any)["content"].(string)
				mu.Lock()
				defer mu.Unlock()
				if ch["finish_reason"] != "stop" {
					lengths++
					t.Errorf("schema %s seed %d: finish %v after %q", src, seed, ch["finish_reason"], content)
					return
				}
				stops++
				inst, err := jsonschema.UnmarshalJSON(strings.NewReader(content))
				if err != nil {
					t.Errorf("schema %s seed %d: %q is not JSON: %v", src, seed, content, err)
					return
				}
				if err := sch.Validate(inst); err != nil {
					t.Errorf("schema %s seed %d: %q does not validate: %v", src, seed, content, err)
				}
			}()
		}
		wg.Wait()
	}
	t.Logf("%d schemas × %d seeds: %d completions finished and validated, %d hit the length limit", schemas, seeds, stops, lengths)
}

func validator(t *testing.T, src []byte) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("mem://s.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("mem://s.json")
	if err != nil {
		t.Fatalf("validator rejects %s: %v", src, err)
	}
	return s
}

// TestGuidedRegexChoiceAndJSONObject: the other constraints, through both endpoints, and a bad schema is a 400
// naming the keyword.
func TestGuidedRegexChoiceAndJSONObject(t *testing.T) {
	e := tinyServer(t, 1024)
	for _, c := range []struct {
		extra string
		ok    func(string) bool
	}{
		{`"guided_choice":["yes","no","maybe so"]`, func(s string) bool { return s == "yes" || s == "no" || s == "maybe so" }},
		{`"guided_regex":"[0-9]{3}-[a-z]{2,4}"`, func(s string) bool {
			return len(s) >= 6 && len(s) <= 8 && s[3] == '-' && strings.Trim(s[:3], "0123456789") == "" && strings.Trim(s[4:], "abcdefghijklmnopqrstuvwxyz") == ""
		}},
		{`"response_format":{"type":"json_object"}`, func(s string) bool {
			var m map[string]any
			return json.Unmarshal([]byte(s), &m) == nil
		}},
	} {
		for seed := range 3 {
			st, b := e.post(t, "/v1/chat/completions", chatBody("a1", "hi", fmt.Sprintf(`"temperature":1.2,"seed":%d,"max_tokens":900,%s`, seed, c.extra)))
			ch := decodeMap(b)["choices"].([]any)[0].(map[string]any)
			content, _ := ch["message"].(map[string]any)["content"].(string)
			if st != 200 || ch["finish_reason"] != "stop" || !c.ok(content) {
				t.Errorf("%s seed %d: %d %s", c.extra, seed, st, b)
			}
			st, b = e.post(t, "/v1/completions", fmt.Sprintf(`{"model":"tiny","prompt":"x","temperature":1.2,"seed":%d,"max_tokens":900,%s}`, seed, c.extra))
			ch = decodeMap(b)["choices"].([]any)[0].(map[string]any)
			text, _ := ch["text"].(string)
			if st != 200 || ch["finish_reason"] != "stop" || !c.ok(text) {
				t.Errorf("completions %s seed %d: %d %s", c.extra, seed, st, b)
			}
		}
	}
	st, b := e.post(t, "/v1/chat/completions", chatBody("tiny", "hi", `"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object","patternProperties":{"a":{}}}}}`))
	if e := wantError(t, st, b, 400, "patternProperties"); e["param"] != "response_format.json_schema.schema" {
		t.Fatalf("param %v", e["param"])
	}
	st, b = e.post(t, "/v1/completions", `{"model":"tiny","prompt":"x","guided_regex":"a(?=b)"}`)
	wantError(t, st, b, 400, "guided_regex")
}
