package main

import (
	"encoding/json"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/models/testmodel"
	"github.com/lorakit/lorakit/train/data"
)

// TestDataScoreJudges: --reward-model and --classifier add score.reward and score.labels, filter thresholds
// them, and a model of the wrong kind is refused naming the flag.
func TestDataScoreJudges(t *testing.T) {
	dir := fixture(t, testmodel.Default())
	base := filepath.Join(dir, "base")
	for name, labels := range map[string][]string{"rm": {"LABEL_0"}, "cls": {"edu", "junk"}} {
		if err := testmodel.WriteClassifier(filepath.Join(dir, name), base, testmodel.ClassifierOptions{Labels: labels, PadTokenID: -1, Seed: 3}); err != nil {
			t.Fatal(err)
		}
	}
	score := []string{"data", "score", "d.jsonl", "--model", "base", "--out", "s.jsonl", "--threads", "1"}
	cli(t, dir, append(score, "--reward-model", "base")...).want(t, 1, "--reward-model", "is a causal language model")
	cli(t, dir, append(score, "--reward-model", "cls")...).want(t, 1, "--reward-model", "has 2 labels", "--classifier")
	cli(t, dir, "data", "score", "d.jsonl", "--model", "rm", "--out", "s.jsonl").want(t, 1, "is a sequence classifier", "--reward-model")
	cli(t, dir, append(score, "--reward-model", "rm", "--classifier", "cls")...).want(t, 0)
	rows := readJSONL(t, filepath.Join(dir, "s.jsonl"))
	edu := 0
	for _, r := range rows {
		var s data.Score
		if err := json.Unmarshal(r["score"], &s); err != nil {
			t.Fatal(err)
		}
		if s.Reward == nil || len(s.Labels) != 2 || s.Labels["edu"]+s.Labels["junk"] < 0.999999 {
			t.Fatalf("scores %+v", s)
		}
		if s.Labels["edu"] >= 0.5 {
			edu++
		}
	}
	filter := []string{"data", "filter", "s.jsonl", "--out", "c.jsonl", "--json"}
	cli(t, dir, append(filter, "--label", "edu>=0.5", "--by", "reward")...).want(t, 0)
	if got := len(readJSONL(t, filepath.Join(dir, "c.jsonl"))); got != edu {
		t.Errorf("--label edu>=0.5 kept %d, want %d", got, edu)
	}
	cli(t, dir, append(filter, "--label", "edu>0.5")...).want(t, 1, "NAME>=VALUE")
	cli(t, dir, append(filter, "--label", "quality>=0.5")...).want(t, 1, "s.jsonl:1 has no score.labels.quality", "[edu junk]")

	// diversity: embeddings beside the output, the report, a diverse selection
	cli(t, dir, "data", "diversity", "s.jsonl").want(t, 1, "s.emb.npy", "--embed-model")
	cli(t, dir, append(filter, "--select", "4", "--diverse")...).want(t, 1, "s.emb.npy", "--embed-model")
	cli(t, dir, append(score, "--force", "--embed-model", "base", "--pool", "max")...).want(t, 1, "--pool")
	cli(t, dir, append(score, "--force", "--embed-model", "rm", "--pool", "last")...).want(t, 0)
	r := cli(t, dir, "data", "diversity", "s.jsonl", "--clusters", "3", "--seed", "2", "--json")
	r.want(t, 0)
	var rep data.DiversityReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || rep.K != 3 || rep.Examples != 12 || rep.EffectiveClusters <= 1 {
		t.Fatalf("diversity report %+v, %v", rep, err)
	}
	cli(t, dir, "data", "diversity", "s.jsonl", "--clusters", "3").want(t, 0, "effective number of clusters")
	cli(t, dir, append(filter, "--diverse")...).want(t, 1, "--select")
	cli(t, dir, append(filter, "--select", "4", "--diverse", "--by", "ppl")...).want(t, 0)
	if got := len(readJSONL(t, filepath.Join(dir, "c.jsonl"))); got != 4 {
		t.Errorf("--select 4 --diverse kept %d", got)
	}
	// rescoring without --embed-model removes the embeddings that no longer match
	cli(t, dir, append(score, "--force")...).want(t, 0)
	cli(t, dir, "data", "diversity", "s.jsonl").want(t, 1, "--embed-model")
}

// TestDataScoreJudgesWithoutModel: the judges need no --model. A reward model alone writes the same rewards and
// near-duplicate clusters as with --model, and no perplexity or token counts; filter ranks by the reward then and
// refuses the rules that need --model's scores; a classifier or an embedding model alone work the same way; asked
// for nothing, score names the flags.
func TestDataScoreJudgesWithoutModel(t *testing.T) {
	dir := fixture(t, testmodel.Default())
	base := filepath.Join(dir, "base")
	for name, labels := range map[string][]string{"rm": {"LABEL_0"}, "cls": {"edu", "junk"}} {
		if err := testmodel.WriteClassifier(filepath.Join(dir, name), base, testmodel.ClassifierOptions{Labels: labels, PadTokenID: -1, Seed: 3}); err != nil {
			t.Fatal(err)
		}
	}
	cli(t, dir, "data", "score", "d.jsonl", "--out", "s.jsonl").
		want(t, 1, "nothing to score with", "--model", "--reward-model", "--classifier", "--embed-model")
	cli(t, dir, "data", "score", "d.jsonl", "--adapter", "ad", "--reward-model", "rm", "--out", "s.jsonl").want(t, 1, "--adapter", "--model")

	cli(t, dir, "data", "score", "d.jsonl", "--model", "base", "--reward-model", "rm", "--out", "with.jsonl", "--threads", "1").want(t, 0)
	cli(t, dir, "data", "score", "d.jsonl", "--reward-model", "rm", "--out", "alone.jsonl", "--threads", "1").want(t, 0, "12 scored")
	with, alone := readJSONL(t, filepath.Join(dir, "with.jsonl")), readJSONL(t, filepath.Join(dir, "alone.jsonl"))
	if len(alone) != 12 || len(with) != 12 {
		t.Fatalf("%d and %d lines, want 12", len(with), len(alone))
	}
	for i := range alone {
		var raw map[string]json.RawMessage
		var sw, sa data.Score
		if err := json.Unmarshal(alone[i]["score"], &raw); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"nll", "ppl", "ifd", "nll_alone", "total_tokens", "scored_tokens"} {
			if _, ok := raw[k]; ok {
				t.Fatalf("line %d: score.%s without --model: %s", i+1, k, alone[i]["score"])
			}
		}
		if json.Unmarshal(alone[i]["score"], &sa) != nil || json.Unmarshal(with[i]["score"], &sw) != nil {
			t.Fatal("unreadable score")
		}
		if sa.Reward == nil || sw.Reward == nil || *sa.Reward != *sw.Reward || sa.Cluster != sw.Cluster || sa.ModelScore != nil || sw.ModelScore == nil {
			t.Fatalf("line %d: alone %+v, with --model %+v", i+1, sa, sw)
		}
		if string(alone[i]["prompt"]) != string(with[i]["prompt"]) {
			t.Fatalf("line %d: the example changed", i+1)
		}
	}

	filter := []string{"data", "filter", "alone.jsonl", "--out", "c.jsonl"}
	cli(t, dir, append(filter, "--max-ppl", "10")...).want(t, 1, "alone.jsonl:1 has no perplexity", "--max-ppl", "--model")
	cli(t, dir, append(filter, "--by", "ifd", "--keep-top", "0.5")...).want(t, 1, "--by ifd", "--model")
	cli(t, dir, append(filter, "--max-tokens", "100")...).want(t, 1, "--min-tokens/--max-tokens")
	cli(t, dir, append(filter, "--keep-top", "0.5", "--report", "rep.json")...).want(t, 0, "6 kept")
	var rep data.FilterReport
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(dir, "rep.json"))), &rep); err != nil || rep.By != "reward" || rep.Histogram.Metric != "reward" {
		t.Fatalf("report of a reward-only file: by %q, histogram %q (%v)", rep.By, rep.Histogram.Metric, err)
	}
	// the six highest rewards are kept
	var rewards []float64
	for _, r := range alone {
		var s data.Score
		_ = json.Unmarshal(r["score"], &s)
		rewards = append(rewards, *s.Reward)
	}
	sort.Float64s(rewards)
	for _, r := range readJSONL(t, filepath.Join(dir, "c.jsonl")) {
		for i, a := range alone {
			if string(a["prompt"]) == string(r["prompt"]) {
				var s data.Score
				_ = json.Unmarshal(a["score"], &s)
				if *s.Reward < rewards[6] {
					t.Errorf("line %d kept with reward %v below the top half (from %v)", i+1, *s.Reward, rewards[6])
				}
			}
		}
	}

	// a classifier alone: the first label ranks by default; an embedding model alone: diversity without perplexity
	cli(t, dir, "data", "score", "d.jsonl", "--classifier", "cls", "--out", "cls.jsonl", "--threads", "1").want(t, 0)
	cli(t, dir, "data", "filter", "cls.jsonl", "--out", "c2.jsonl", "--keep-top", "0.25", "--report", "rep2.json").want(t, 0, "3 kept")
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(dir, "rep2.json"))), &rep); err != nil || rep.By != "label:edu" {
		t.Fatalf("report of a classifier-only file: by %q (%v)", rep.By, err)
	}
	cli(t, dir, "data", "score", "d.jsonl", "--embed-model", "base", "--out", "emb.jsonl", "--threads", "1").want(t, 0)
	r := cli(t, dir, "data", "diversity", "emb.jsonl", "--clusters", "3")
	r.want(t, 0, "effective number of clusters")
	if strings.Contains(r.stdout, "mean ppl") {
		t.Errorf("diversity shows a perplexity the file does not have:\n%s", r.stdout)
	}
}
