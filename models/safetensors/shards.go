package safetensors

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"

	"github.com/lorakit/lorakit/internal/atomicfile"
)

// DefaultMaxShardSize is transformers' save_pretrained default max_shard_size ("5GB").
const DefaultMaxShardSize = 5_000_000_000

// Shard is one weights file of a checkpoint being written: its name and the indices of its tensors in the
// caller's header list.
type Shard struct {
	File    string
	Tensors []int
}

// Bytes is the data size of the tensor h describes.
func (h Header) Bytes() int64 { return h.bytes() }

// PlanShards groups the tensors hs, in order, into files of at most maxBytes (0: DefaultMaxShardSize), as
// transformers' save_pretrained does: a tensor (or a group) bigger than maxBytes gets a file of its own.
// group, when not nil, keeps consecutive tensors with the same group[i] in one file (a quantised weight and its
// quantisation state, which transformers reads from one shard). One file is "model.safetensors" unless
// sharded is set (the input was sharded); several are "model-00001-of-0000N.safetensors".
func PlanShards(hs []Header, group []int, maxBytes int64, sharded bool) []Shard {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxShardSize
	}
	var groups [][]int
	var cur []int
	var size int64
	for i := 0; i < len(hs); {
		j := i + 1
		for group != nil && j < len(hs) && group[j] == group[i] {
			j++
		}
		var n int64
		for k := i; k < j; k++ {
			n += hs[k].bytes()
		}
		if len(cur) > 0 && size+n > maxBytes {
			groups = append(groups, cur)
			cur, size = nil, 0
		}
		for k := i; k < j; k++ {
			cur = append(cur, k)
		}
		size += n
		i = j
	}
	if len(cur) > 0 || len(groups) == 0 {
		groups = append(groups, cur)
	}
	if len(groups) == 1 && !sharded {
		return []Shard{{File: "model.safetensors", Tensors: groups[0]}}
	}
	out := make([]Shard, len(groups))
	for i, g := range groups {
		out[i] = Shard{File: fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(groups)), Tensors: g}
	}
	return out
}

// WriteShards writes the shards into dir, one tensor at a time (fill(i, w) writes the bytes of hs[i], in shard
// order), each file atomically with {"format":"pt"} metadata, then model.safetensors.index.json (total_size,
// weight_map) when there is more than the single model.safetensors. Peak memory is what fill holds.
func WriteShards(dir string, hs []Header, shards []Shard, fill func(i int, w io.Writer) error) error {
	weightMap := map[string]string{}
	var total int64
	for _, sh := range shards {
		sub := make([]Header, len(sh.Tensors))
		for k, i := range sh.Tensors {
			sub[k] = hs[i]
			weightMap[hs[i].Name] = sh.File
			total += hs[i].bytes()
		}
		err := WriteStream(filepath.Join(dir, sh.File), sub, map[string]string{"format": "pt"}, func(k int, w io.Writer) error {
			return fill(sh.Tensors[k], w)
		})
		if err != nil {
			return err
		}
	}
	if len(shards) == 1 && shards[0].File == "model.safetensors" {
		return nil
	}
	idx := map[string]any{"metadata": map[string]any{"total_size": total}, "weight_map": weightMap}
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteBytes(filepath.Join(dir, IndexName), append(b, '\n'))
}
