package main

import (
	"path/filepath"
	"testing"

	"github.com/lorakit/lorakit/models/testmodel"
)

// TestGGUFBaseMergeQuantize: merge and quantize take a GGUF base; the merged folder generates (greedy) what the
// merge of the HF folder generates, and no temporary is left.
func TestGGUFBaseMergeQuantize(t *testing.T) {
	dir := fixture(t, testmodel.Default())
	cli(t, dir, append(trainQuick, "--out", "a")...).want(t, 0)
	cli(t, dir, "export", "gguf", "--model", "base", "--type", "f32", "--no-modelfile", "base.gguf").want(t, 0)
	cli(t, dir, "merge", "base.gguf", "a", "m1").want(t, 0)
	cli(t, dir, "merge", "base", "a", "m2").want(t, 0)
	gen := func(m string) string {
		// greedy and past EOS: a GGUF file has no generation_config.json (the fixture's samples) and one eos id
		r := cli(t, dir, "generate", "--model", m, "--prompt", "What is 3+4?", "--max-tokens", "12", "--temperature", "0", "--ignore-eos")
		r.want(t, 0)
		return r.stdout
	}
	if a, b := gen("m1"), gen("m2"); a != b {
		t.Errorf("merge of the GGUF base generates %q, of the folder %q", a, b)
	}
	cli(t, dir, "quantize", "base.gguf", "q").want(t, 0)
	cli(t, dir, "generate", "--model", "q", "--prompt", "hi", "--max-tokens", "4").want(t, 0)
	if ents, _ := filepath.Glob(filepath.Join(dir, ".*")); len(ents) > 0 {
		t.Errorf("temporaries left: %v", ents)
	}
}
