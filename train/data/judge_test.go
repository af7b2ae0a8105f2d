package data_test

import (
	"bufio"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/internal/testenv"
	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/chat"
	"github.com/lorakit/lorakit/models/safetensors"
	"github.com/lorakit/lorakit/models/testmodel"
	"github.com/lorakit/lorakit/train/data"
)

// judgeLines are conversations of different lengths (one with reasoning, one bad line, one text line).
var judgeLines = []string{
	`{"prompt":"Once upon a time","response":"there was a little girl named Lily."}`,
	`{"prompt":"Tom had a ball.","response":"He played with it all day long in the big park with his dog and his friends."}`,
	`{"prompt":"broken"`,
	`{"messages":[{"role":"user","content":"Why is the sky blue?"},{"role":"assistant","content":"Because of the sun.","reasoning_content":"The girl thought about the sky."}]}`,
	`{"messages":[{"role":"system","content":"Be kind."},{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello!"},{"role":"user","content":"Tell a story."},{"role":"assistant","content":"Once there was a cat."}]}`,
	`{"text":"The dog ran to the tree and sat down."}`,
}

// storiesJudge writes stories260K with a random score head (pad_token_id 1: <s>, which the chat template writes
// after every assistant turn, so every reading skips trailing padding) and loads it.
func storiesJudge(t *testing.T, labels []string, problem string) (*models.Model, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "judge")
	src := filepath.Join(testenv.Testdata(t), "models", "stories260K")
	o := testmodel.ClassifierOptions{Labels: labels, ProblemType: problem, PadTokenID: 1, Seed: uint64(len(labels)), Std: 0.3}
	if err := testmodel.WriteClassifier(dir, src, o); err != nil {
		t.Fatal(err)
	}
	m, err := models.Load(dir, models.LoadOptions{Threads: 2, Kind: models.SequenceClassifier})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, dir
}

// refScores is the float64 reference of a judge on one example: the conversation rendered by the judge's chat
// template (reasoning dropped), the decoder in float64, the hidden state at the rightmost token that is not
// pad_token_id times score.weight.
func refScores(t *testing.T, m *models.Model, dir string, ex *data.Example) []float64 {
	t.Helper()
	var ids []int
	if ex.Format == data.FormatText {
		ids = m.Tok.Encode(ex.Text, true)
	} else {
		msgs := append([]chat.Message(nil), ex.Messages...)
		for i := range msgs {
			msgs[i].ReasoningContent = ""
		}
		text, err := m.Chat.Render(msgs, false)
		if err != nil {
			t.Fatal(err)
		}
		ids = m.Tok.Encode(text, false)
	}
	pos := 0
	for p, id := range ids {
		if id != m.Config.PadTokenID {
			pos = p
		}
	}
	if pos == len(ids)-1 && ex.Format != data.FormatText {
		t.Fatalf("line %d: the rendering does not end with the pad token, the test would not check the padding rule", ex.Line)
	}
	c := m.Config
	hs, err := testmodel.RefHidden(dir, testmodel.RefConfig{Hidden: c.HiddenSize, HeadDim: c.HeadDim, Heads: c.NumAttentionHeads,
		KVHeads: c.NumKeyValueHeads, Layers: c.NumHiddenLayers, RMSNormEps: c.RMSNormEps, InvFreq: c.InvFreq()}, ids)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := safetensors.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	w, err := ck.Float32s("score.weight")
	if err != nil {
		t.Fatal(err)
	}
	return testmodel.RefMatVec(w, hs[pos])
}

func readScores(t *testing.T, path string) []data.Score {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []data.Score
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var v struct{ Score data.Score }
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v.Score)
	}
	return out
}

// TestScoreJudges: data score's reward and classifier scores equal the float64 reference of the last non-pad
// hidden state times the head (softmax for the classifier) to 1e-5, whether the lines are scored one per batch
// or all in one (different lengths side by side, to 1e-6: f32 sums in another order), and reasoning is read only when asked.
func TestScoreJudges(t *testing.T) {
	lmDir := filepath.Join(testenv.Testdata(t), "models", "stories260K")
	lm, err := models.Load(lmDir, models.LoadOptions{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer lm.Close()
	rm, rmDir := storiesJudge(t, []string{"LABEL_0"}, "")
	cls, clsDir := storiesJudge(t, []string{"clean", "toxic", "spam"}, "single_label_classification")
	in := filepath.Join(t.TempDir(), "in.jsonl")
	if err := os.WriteFile(in, []byte(strings.Join(judgeLines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bos, _ := lm.Tok.BOS()
	score := func(batchTokens int, reasoning bool) []data.Score {
		out := filepath.Join(t.TempDir(), "scored.jsonl")
		o := data.ScoreOptions{Tok: lm.Tok, Tpl: lm.Chat, BOS: bos, HasBOS: true, Scorer: &data.ModelScorer{Net: lm.Net},
			BatchTokens: batchTokens, Workers: 2,
			Reward:     &data.Judge{Net: rm.Net, Tok: rm.Tok, Tpl: rm.Chat, Reasoning: reasoning},
			Classifier: &data.Judge{Net: cls.Net, Tok: cls.Tok, Tpl: cls.Chat, Reasoning: reasoning}}
		if _, err := data.ScoreFile(in, out, o); err != nil {
			t.Fatal(err)
		}
		return readScores(t, out)
	}
	one, all := score(1, false), score(1<<20, false)
	worst := 0.0
	for i, line := range judgeLines {
		ex, lerr := data.ParseLine([]byte(line), "in.jsonl", i+1)
		if lerr != nil {
			if one[i].Error == "" || one[i].Reward != nil {
				t.Errorf("line %d: bad line scored: %+v", i+1, one[i])
			}
			continue
		}
		if one[i].Reward == nil || all[i].Reward == nil || len(one[i].Labels) != 3 {
			t.Fatalf("line %d: no judge scores: %+v", i+1, one[i])
		}
		if math.Abs(*one[i].Reward-*all[i].Reward) > 1e-6 { // f32 sums in another order, no more
			t.Errorf("line %d: reward %v alone, %v in one batch", i+1, *one[i].Reward, *all[i].Reward)
		}
		worst = math.Max(worst, math.Abs(*one[i].Reward-refScores(t, rm, rmDir, ex)[0]))
		logits := refScores(t, cls, clsDir, ex)
		sum := 0.0
		for _, l := range logits {
			sum += math.Exp(l)
		}
		for j, name := range []string{"clean", "toxic", "spam"} {
			if math.Abs(one[i].Labels[name]-all[i].Labels[name]) > 1e-6 {
				t.Errorf("line %d label %s: %v alone, %v in one batch", i+1, name, one[i].Labels[name], all[i].Labels[name])
			}
			worst = math.Max(worst, math.Abs(one[i].Labels[name]-math.Exp(logits[j])/sum))
		}
	}
	t.Logf("max abs diff vs float64 reference: %.2e", worst)
	if worst > 1e-5 {
		t.Fatalf("judge scores differ from the float64 reference by %g > 1e-5", worst)
	}
	withR := score(1<<20, true)
	for i := range judgeLines {
		if one[i].Error != "" {
			continue
		}
		changed := math.Abs(*withR[i].Reward-*one[i].Reward) > 1e-4
		if hasReasoning := strings.Contains(judgeLines[i], "reasoning_content"); changed != hasReasoning {
			t.Errorf("line %d: reward changed with --judge-reasoning: %v, has reasoning: %v", i+1, changed, hasReasoning)
		}
	}
}

// TestJudgeActivations: softmax over labels by default, sigmoid per label for multi-label, raw for one output
// or regression.
func TestJudgeActivations(t *testing.T) {
	for _, tc := range []struct {
		labels  int
		problem string
		want    func(l []float64) []float64
	}{
		{1, "", func(l []float64) []float64 { return l }},
		{2, "regression", func(l []float64) []float64 { return l }},
		{2, "multi_label_classification", func(l []float64) []float64 {
			return []float64{1 / (1 + math.Exp(-l[0])), 1 / (1 + math.Exp(-l[1]))}
		}},
		{2, "", func(l []float64) []float64 {
			e0, e1 := math.Exp(l[0]), math.Exp(l[1])
			return []float64{e0 / (e0 + e1), e1 / (e0 + e1)}
		}},
	} {
		names := []string{"a", "b"}[:tc.labels]
		m, _ := storiesJudge(t, names, tc.problem)
		seq := []int{1, 200, 300, 400}
		raw, err := m.Net.Classify([][]int{seq})
		if err != nil {
			t.Fatal(err)
		}
		got, err := (&data.Judge{Net: m.Net, Tok: m.Tok}).Classify([][]int{seq})
		if err != nil {
			t.Fatal(err)
		}
		l := []float64{float64(raw[0][0]), 0}
		if tc.labels > 1 {
			l[1] = float64(raw[0][1])
		}
		want := tc.want(l[:tc.labels])
		for j := range want {
			if math.Abs(got[0][j]-want[j]) > 1e-12 {
				t.Errorf("%d labels %q: got %v, want %v", tc.labels, tc.problem, got[0], want)
			}
		}
	}
}

// TestFilterRewardAndLabels: --by reward ranks by reward, --label thresholds drop by label, and a file without
// the scores a rule needs is refused naming the line and what to run.
func TestFilterRewardAndLabels(t *testing.T) {
	var b strings.Builder
	for i, r := range []float64{0.5, -1, 2, 0.1} {
		sc := data.Score{Line: i + 1, Reward: &r, Labels: map[string]float64{"edu": float64(i) / 4, "toxic": 1 - float64(i)/4}}
		sb, _ := json.Marshal(sc)
		b.WriteString(`{"score":` + string(sb) + `,"text":"t` + string(rune('a'+i)) + `"}` + "\n")
	}
	in := filepath.Join(t.TempDir(), "s.jsonl")
	if err := os.WriteFile(in, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "o.jsonl")
	rep, err := data.Filter(in, out, data.FilterOptions{By: "reward", KeepTop: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(out); string(got) != "{\"text\":\"ta\"}\n{\"text\":\"tc\"}\n" || rep.Kept != 2 {
		t.Errorf("--by reward --keep-top 0.5 kept %q", got)
	}
	edu, _ := data.ParseLabelRule("edu>=0.25")
	tox, _ := data.ParseLabelRule("toxic <= 0.6")
	rep, err = data.Filter(in, out, data.FilterOptions{Labels: []data.LabelRule{edu, tox}, MinReward: 0, HasMinReward: true})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(out); string(got) != "{\"text\":\"tc\"}\n{\"text\":\"td\"}\n" || rep.Reasons["label"] != 1 || rep.Reasons["min_reward"] != 1 {
		t.Errorf("labels and min reward kept %q, reasons %v", got, rep.Reasons)
	}
	if _, err := data.ParseLabelRule("edu>0.7"); err == nil {
		t.Error("edu>0.7 accepted")
	}
	bad, _ := data.ParseLabelRule("quality>=0.5")
	if _, err := data.Filter(in, out, data.FilterOptions{Labels: []data.LabelRule{bad}}); err == nil || !strings.Contains(err.Error(), "s.jsonl:1 has no score.labels.quality") {
		t.Errorf("missing label: err = %v", err)
	}
	plain := filepath.Join(t.TempDir(), "p.jsonl")
	os.WriteFile(plain, []byte(`{"score":{"line":1,"ppl":2},"text":"x"}`+"\n"), 0o644)
	if _, err := data.Filter(plain, out, data.FilterOptions{By: "reward"}); err == nil || !strings.Contains(err.Error(), "--reward-model") {
		t.Errorf("missing reward: err = %v", err)
	}
}
