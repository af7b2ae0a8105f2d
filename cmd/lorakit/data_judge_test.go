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
}
