package data

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/internal/testenv"
	"github.com/lorakit/lorakit/models/chat"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/safetensors"
	"github.com/lorakit/lorakit/models/testmodel"
)

// fakeScorer: nll of predicting token y is 1 + (y%7)/10, independent of context.
type fakeScorer struct{ calls int }

func fakeNLL(y int) float64 { return 1 + float64(y%7)/10 }

func (f *fakeScorer) TokenNLL(seqs [][]int) ([][]float64, error) {
	f.calls++
	out := make([][]float64, len(seqs))
	for i, s := range seqs {
		out[i] = []float64{}
		for t := 0; t+1 < len(s); t++ {
			out[i] = append(out[i], fakeNLL(s[t+1]))
		}
	}
	return out, nil
}

func readScored(t *testing.T, path string) []map[string]json.RawMessage {
	t.Helper()
	return testenv.ReadJSONL[map[string]json.RawMessage](t, path)
}

func TestScoreFile(t *testing.T) {
	lines := []string{
		`{"prompt":"hello","response":"abc"}`,
		`{"prompt":"x"`,
		`{"prompt":"hello","response":"abc"}`,
		`{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"zz","reasoning_content":"r"}]}`,
	}
	in := writeFile(t, strings.Join(lines, "\n")+"\n")
	out := filepath.Join(t.TempDir(), "scored.jsonl")
	tpl, _ := chat.New(chatml, "", "<|im_end|>")
	tok := byteTok{[]string{"<|im_start|>", "<|im_end|>"}}
	fs := &fakeScorer{}
	sum, err := ScoreFile(in, out, ScoreOptions{Tok: tok, Tpl: tpl, BOS: 999, HasBOS: true, Scorer: fs, BatchTokens: 1})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Lines != 4 || sum.Scored != 3 || sum.Bad != 1 {
		t.Fatalf("summary %+v", sum)
	}
	rows := readScored(t, out)
	if len(rows) != 4 {
		t.Fatalf("%d rows", len(rows))
	}
	var s0, s1, s2, s3 Score
	for i, p := range []*Score{&s0, &s1, &s2, &s3} {
		if err := json.Unmarshal(rows[i]["score"], p); err != nil {
			t.Fatal(err)
		}
	}
	// by hand: response tokens "abc<|im_end|>" → a b c <|im_end|>(1001)
	want := (fakeNLL('a') + fakeNLL('b') + fakeNLL('c') + fakeNLL(1001)) / 4
	if math.Abs(s0.NLL-want) > 1e-12 || math.Abs(s0.NLLAlone-want) > 1e-12 || math.Abs(s0.IFD-1) > 1e-12 || s0.ScoredTokens != 4 {
		t.Fatalf("score 0 %+v want nll %v", s0, want)
	}
	if math.Abs(s0.PPL-math.Exp(want)) > 1e-9 || s0.Cluster != 1 || s0.Line != 1 || s0.Format != FormatPromptResponse {
		t.Fatalf("score 0 %+v", s0)
	}
	if s1.Error == "" || s1.Line != 2 || len(rows[1]) != 1 {
		t.Fatalf("bad line %+v %v", s1, rows[1])
	}
	if s2.Cluster != 1 || s3.Cluster != 4 {
		t.Fatalf("clusters %d %d", s2.Cluster, s3.Cluster)
	}
	if string(rows[0]["prompt"]) != `"hello"` || s3.ResponseTokens != len("<think>\nr\n</think>\n\nzz")+1 {
		t.Fatalf("row 0 %v / resp tokens %d", rows[0], s3.ResponseTokens)
	}
	// original form is recoverable exactly
	raw, sc, err := SplitScored(mustReadLine(t, out, 0))
	if err != nil || string(raw) != lines[0] || sc.Line != 1 {
		t.Fatalf("split %q %+v %v", raw, sc, err)
	}

	// resume: a torn tail is cut, finished lines are not scored again
	b, _ := os.ReadFile(out)
	first2 := strings.SplitAfterN(string(b), "\n", 3)
	os.Remove(out)
	if err := os.WriteFile(out+".partial", []byte(first2[0]+first2[1]+`{"score":{"li`), 0o644); err != nil {
		t.Fatal(err)
	}
	fs2 := &fakeScorer{}
	sum, err = ScoreFile(in, out, ScoreOptions{Tok: tok, Tpl: tpl, BOS: 999, HasBOS: true, Scorer: fs2, Resume: true})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Skipped != 2 || sum.Scored != 2 || sum.Bad != 0 {
		t.Fatalf("resume summary %+v", sum)
	}
	b2, _ := os.ReadFile(out)
	if string(b2) != string(b) {
		t.Fatalf("resumed output differs:\n%s\nvs\n%s", b2, b)
	}
}

func mustReadLine(t *testing.T, path string, n int) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(strings.Split(string(b), "\n")[n])
}

func TestMinHashNearDuplicates(t *testing.T) {
	m := newMinHash()
	base := []int{}
	for i := 0; i < 200; i++ {
		base = append(base, (i*37)%101)
	}
	near := append([]int(nil), base...)
	near[100] = 7 // one token changed
	other := []int{}
	for i := 0; i < 200; i++ {
		other = append(other, (i*53+11)%97+300)
	}
	if c := m.assign(m.sketch(base), 1); c != 1 {
		t.Fatal(c)
	}
	if c := m.assign(m.sketch(near), 2); c != 1 {
		t.Fatalf("near duplicate got cluster %d", c)
	}
	if c := m.assign(m.sketch(other), 3); c != 3 {
		t.Fatalf("different text got cluster %d", c)
	}
	// short templated texts that differ in two of ~36 tokens (similarity ~0.6) stay apart
	for i := 0; i < 30; i++ {
		ids := []int{}
		for j := 0; j < 36; j++ {
			ids = append(ids, 500+j)
		}
		ids[17], ids[34] = 1000+i, 2000+i
		if c := m.assign(m.sketch(ids), 10+i); c != 10+i {
			t.Fatalf("templated text %d joined cluster %d", i, c)
		}
	}
}

func TestModelScorerMatchesDirectForward(t *testing.T) {
	dir := t.TempDir()
	o := testmodel.Default()
	if err := testmodel.Write(dir, o); err != nil {
		t.Fatal(err)
	}
	ck, err := safetensors.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	cfg, err := llama.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	net, err := llama.Load(ck, cfg, llama.LoadOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	seqs := [][]int{{1, 2, 3, 4, 5, 6, 7}, {9, 8}, {5}, {10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110}}
	// reference: each sequence alone, all logits
	ref := make([][]float64, len(seqs))
	for i, s := range seqs {
		lg, err := net.Forward([]llama.Seq{{Tokens: s, AllLogits: true}})
		if err != nil {
			t.Fatal(err)
		}
		ref[i] = nllFromLogits(lg[0], s, []float64{})
	}
	for _, budget := range []int{0, 3 * cfg.VocabSize, 1} {
		sc := &ModelScorer{Net: net, MaxLogitFloats: budget}
		got, err := sc.TokenNLL(seqs)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkNLL(seqs, got); err != nil {
			t.Fatal(err)
		}
		for i := range seqs {
			for j := range ref[i] {
				if d := math.Abs(got[i][j] - ref[i][j]); d > 1e-4 {
					t.Fatalf("budget %d seq %d pos %d: %v vs %v", budget, i, j, got[i][j], ref[i][j])
				}
			}
		}
	}
}

// TestScoreFileNeedsAScorer: with neither a scorer nor a judge there is nothing to score; a scorer without its
// tokenizer and template is refused.
func TestScoreFileNeedsAScorer(t *testing.T) {
	in := writeFile(t, `{"prompt":"hello","response":"abc"}`+"\n")
	out := filepath.Join(t.TempDir(), "scored.jsonl")
	if _, err := ScoreFile(in, out, ScoreOptions{}); err == nil || !strings.Contains(err.Error(), "nothing to score with") {
		t.Fatalf("no scorer, no judge: %v", err)
	}
	if _, err := ScoreFile(in, out, ScoreOptions{Scorer: &fakeScorer{}}); err == nil || !strings.Contains(err.Error(), "tokenizer and chat template") {
		t.Fatalf("a scorer without its tokenizer: %v", err)
	}
	if _, err := os.Stat(out + ".partial"); err == nil {
		t.Fatal("a refused run left a partial output")
	}
}
