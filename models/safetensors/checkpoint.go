package safetensors

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// IndexName is the file that lists the shards of a sharded checkpoint.
const IndexName = "model.safetensors.index.json"

// Checkpoint is the weights of a Hugging Face folder: model.safetensors or the shards its index names.
type Checkpoint struct {
	Dir   string
	Files []*File
	owner map[string]*File
	names []string
}

// OpenCheckpoint opens the weights of a model folder.
func OpenCheckpoint(dir string) (*Checkpoint, error) {
	var paths []string
	idx := filepath.Join(dir, IndexName)
	single := filepath.Join(dir, "model.safetensors")
	switch {
	case exists(idx):
		shards, err := readIndex(idx)
		if err != nil {
			return nil, err
		}
		for _, s := range shards {
			paths = append(paths, filepath.Join(dir, s))
		}
	case exists(single):
		paths = []string{single}
	default:
		for _, bin := range []string{"pytorch_model.bin", "pytorch_model.bin.index.json", "model.bin"} {
			if exists(filepath.Join(dir, bin)) {
				return nil, fmt.Errorf("%s has only PyTorch pickle weights (%s), which lorakit does not load (they can run code): convert the model to safetensors first, e.g. with transformers' save_pretrained(dir, safe_serialization=True): %w", dir, bin, ErrNoWeights)
			}
		}
		return nil, fmt.Errorf("%s: %w", dir, ErrNoWeights)
	}
	return OpenFiles(dir, paths)
}

// OpenFiles opens a set of safetensors files as one checkpoint; a tensor name in two files is an error.
func OpenFiles(dir string, paths []string) (*Checkpoint, error) {
	c := &Checkpoint{Dir: dir, owner: map[string]*File{}}
	for _, p := range paths {
		f, err := Open(p)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.Files = append(c.Files, f)
		for _, n := range f.Names() {
			if prev, dup := c.owner[n]; dup {
				c.Close()
				return nil, fmt.Errorf("tensor %q is in both %s and %s", n, prev.Path, f.Path)
			}
			c.owner[n] = f
			c.names = append(c.names, n)
		}
	}
	sort.Strings(c.names)
	return c, nil
}

// readIndex returns the distinct shard file names of an index, in first-seen order of sorted tensor names.
func readIndex(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read index: %w", err)
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, fmt.Errorf("%s: empty weight_map", path)
	}
	seen := map[string]bool{}
	var shards []string
	for _, f := range idx.WeightMap {
		if f == "" || strings.Contains(f, "/") || strings.Contains(f, `\`) || f == ".." {
			return nil, fmt.Errorf("%s: invalid shard file name %q", path, f)
		}
		if !seen[f] {
			seen[f] = true
			shards = append(shards, f)
		}
	}
	sort.Strings(shards)
	return shards, nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Names lists every tensor name in sorted order.
func (c *Checkpoint) Names() []string { return c.names }

// Info returns a tensor's header entry and the file that holds it.
func (c *Checkpoint) Info(name string) (TensorInfo, *File, bool) {
	f, ok := c.owner[name]
	if !ok {
		return TensorInfo{}, nil, false
	}
	t, _ := f.Info(name)
	return t, f, true
}

// Bytes returns a zero-copy view of a tensor's raw data.
func (c *Checkpoint) Bytes(name string) ([]byte, error) {
	f, ok := c.owner[name]
	if !ok {
		return nil, fmt.Errorf("%s: tensor %q not found", c.Dir, name)
	}
	return f.Bytes(name)
}

// Float32s returns a converted copy of a floating-point tensor.
func (c *Checkpoint) Float32s(name string) ([]float32, error) {
	f, ok := c.owner[name]
	if !ok {
		return nil, fmt.Errorf("%s: tensor %q not found", c.Dir, name)
	}
	return f.Float32s(name)
}

// EvictAll drops every resident page of the files' mappings (see File.EvictAll).
func (c *Checkpoint) EvictAll() {
	for _, f := range c.Files {
		f.EvictAll()
	}
}

// Close unmaps every file.
func (c *Checkpoint) Close() error {
	var errs []error
	for _, f := range c.Files {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}
