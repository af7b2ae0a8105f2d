package main

import (
	"encoding/json"
	"path/filepath"
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
