package quant

import (
	"encoding/json"
	bnb "github.com/lorakit/lorakit/models/quant"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/models/safetensors"
	"github.com/lorakit/lorakit/models/testmodel"
)

// TestQuantizeFolderShards: a sharded input, or a small MaxShardSize, gives a sharded output with an index; every
// quantised weight keeps its quantisation state in its own shard; the tensors are those of the single-file output,
// byte for byte.
func TestQuantizeFolderShards(t *testing.T) {
	root := t.TempDir()
	one, three := filepath.Join(root, "one"), filepath.Join(root, "three")
	o := testmodel.Options{ModelType: "qwen2", DType: "BF16", Seed: 4}
	if err := testmodel.Write(one, o); err != nil {
		t.Fatal(err)
	}
	o.Shards = 3
	if err := testmodel.Write(three, o); err != nil {
		t.Fatal(err)
	}
	for _, typ := range []bnb.Type{bnb.NF4, bnb.Int8} {
		opt := FolderOptions{Type: typ, Double: typ == bnb.NF4, Threads: 3}
		ref := filepath.Join(root, "ref-"+string(typ))
		res, err := QuantizeFolder(one, ref, opt)
		if err != nil {
			t.Fatal(err)
		}
		if res.Shards != 1 || !exists(filepath.Join(ref, "model.safetensors")) || exists(filepath.Join(ref, safetensors.IndexName)) {
			t.Fatalf("single-file input: %d shards", res.Shards)
		}
		small := opt
		small.MaxShardSize = 20_000
		for name, c := range map[string]struct {
			in  string
			opt FolderOptions
		}{"sharded-input": {three, opt}, "max-shard-size": {one, small}} {
			out := filepath.Join(root, string(typ)+"-"+name)
			res, err := QuantizeFolder(c.in, out, c.opt)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if name == "max-shard-size" && res.Shards < 2 {
				t.Fatalf("%s: %d shard(s)", name, res.Shards)
			}
			b, err := os.ReadFile(filepath.Join(out, safetensors.IndexName))
			if err != nil {
				t.Fatal(err)
			}
			var idx struct {
				WeightMap map[string]string `json:"weight_map"`
			}
			if err := json.Unmarshal(b, &idx); err != nil {
				t.Fatal(err)
			}
			for n, f := range idx.WeightMap {
				if owner := strings.SplitN(n, ".weight.", 2)[0] + ".weight"; strings.Contains(n, ".weight.") && idx.WeightMap[owner] != f {
					t.Errorf("%s: %s is in %s but its weight in %s", name, n, f, idx.WeightMap[owner])
				}
			}
			sameTensors(t, ref, out)
			if ck, err := safetensors.OpenCheckpoint(out); err != nil {
				t.Fatal(err)
			} else {
				if _, ok, err := bnb.FromCheckpoint(ck, "model.layers.1.mlp.down_proj.weight"); !ok || err != nil {
					t.Fatalf("%s: down_proj not quantised: %v", name, err)
				}
				ck.Close()
			}
		}
	}
}

func sameTensors(t *testing.T, a, b string) {
	t.Helper()
	ca, err := safetensors.OpenCheckpoint(a)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	cb, err := safetensors.OpenCheckpoint(b)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	if strings.Join(ca.Names(), ",") != strings.Join(cb.Names(), ",") {
		t.Fatalf("tensors differ:\n%v\n%v", ca.Names(), cb.Names())
	}
	for _, n := range ca.Names() {
		x, _ := ca.Bytes(n)
		y, _ := cb.Bytes(n)
		if string(x) != string(y) {
			t.Fatalf("tensor %s differs", n)
		}
	}
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }
