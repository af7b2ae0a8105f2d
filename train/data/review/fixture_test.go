package review

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fixtureLines is the number of lines writeScored writes.
const fixtureLines = 40

// writeScored writes a scored file as lorakit data score would, with every input shape (prompt/response,
// reasoning, messages with tool calls and results, Alpaca), a bad line, and scores including a nested
// labels object. Line 7 is the bad one. The ifd of line n is (n*37 mod 40)/20, so sorting by it is no
// accident of file order.
func writeScored(t testing.TB, dir string) string {
	t.Helper()
	var b strings.Builder
	for n := 1; n <= fixtureLines; n++ {
		b.WriteString(scoredLine(n))
		b.WriteByte('\n')
	}
	path := filepath.Join(dir, "scored.jsonl")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func scoredLine(n int) string {
	if n == 7 {
		return fmt.Sprintf(`{"score":{"line":%d,"error":"empty response (field \"response\")"}}`, n)
	}
	ifd := float64(n*37%40) / 20
	nll := 0.5 + float64(n%9)/4
	score := map[string]any{
		"line": n, "format": "", "prompt_tokens": 10 + n, "response_tokens": 5 + n%13, "total_tokens": 15 + n + n%13,
		"scored_tokens": 5 + n%13, "nll": nll, "ppl": math.Exp(nll), "nll_alone": nll / math.Max(ifd, 0.05),
		"ppl_alone": 1.0, "ifd": ifd, "cluster": n - n%5 + 1,
		"labels": map[string]any{"educational": float64(n%10) / 10}, "embedding_model": "none",
	}
	var ex string
	switch n % 4 {
	case 0:
		score["format"] = "prompt_response"
		ex = fmt.Sprintf(`"prompt":"Question %d: what is %d plus %d?","response":"The answer to question %d is %d."`, n, n, n, n, 2*n)
	case 1:
		score["format"] = "prompt_reasoning_response"
		ex = fmt.Sprintf(`"prompt":"Think about number %d.","reasoning_content":"Let me think step by step about %d.\nIt is %s.","response":"Number %d is %s."`,
			n, n, parity(n), n, parity(n))
	case 2:
		score["format"] = "messages"
		ex = fmt.Sprintf(`"tools":[{"type":"function","function":{"name":"weather","description":"weather of a city","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}],`+
			`"messages":[{"role":"system","content":"You are helpful."},{"role":"user","content":"Weather in city %d?"},`+
			`{"role":"assistant","content":null,"tool_calls":[{"id":"c%d","type":"function","function":{"name":"weather","arguments":"{\"city\":\"city %d\"}"}}]},`+
			`{"role":"tool","tool_call_id":"c%d","name":"weather","content":"sunny, %d degrees"},`+
			`{"role":"assistant","content":"It is sunny in city %d."}]`, n, n, n, n, 10+n, n)
	default:
		score["format"] = "alpaca"
		ex = fmt.Sprintf(`"instruction":"Translate sentence %d.","input":"Bonjour %d","output":"Hello %d"`, n, n, n)
	}
	sb, _ := json.Marshal(score)
	return fmt.Sprintf(`{"score":%s,%s}`, sb, ex)
}

func parity(n int) string {
	if n%2 == 0 {
		return "even"
	}
	return "odd"
}
