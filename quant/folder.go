// Package quant turns a Hugging Face checkpoint folder into a quantised folder that transformers+bitsandbytes
// and lorakit both load: decoder-layer linear weights in NF4/FP4 blocks or LLM.int8 rows, streamed tensor by
// tensor, sharded like the input, with quantization_config in config.json. The block formats, their kernels and
// the bitsandbytes tensor layout live in models/quant, which the models read; this package only writes folders.
package quant

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/lorakit/lorakit/internal/atomicfile"
	"github.com/lorakit/lorakit/internal/outdir"
	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/ggufconv"
	bnb "github.com/lorakit/lorakit/models/quant"
	"github.com/lorakit/lorakit/models/safetensors"
)

// FolderOptions configure QuantizeFolder.
type FolderOptions struct {
	Type      bnb.Type // nf4 (default), fp4 or int8
	BlockSize int      // 4-bit block size (default 64); int8 always uses one block per row
	Double    bool     // double-quantise the 4-bit absmax values
	// Skip lists module-name substrings left unquantised (transformers' llm_int8_skip_modules rule: a module
	// whose dotted name contains any entry is skipped). lm_head and embeddings are never quantised.
	Skip []string
	// Force replaces an existing non-empty out that is not a previous quantised output (never the input).
	Force bool
	// MaxShardSize in bytes (0: 5 GB, as transformers' save_pretrained). The output is sharded, with
	// model.safetensors.index.json, when the input is sharded or the weights exceed it; a quantised weight and
	// its quantisation state stay in one file.
	MaxShardSize int64
	Threads      int                   // tensors quantised in parallel (default 1); about one tensor each in memory
	Progress     func(done, total int) // called after each tensor; may be nil
}

// TensorReport is the outcome for one quantised weight.
type TensorReport struct {
	Name     string  `json:"name"`
	Shape    []int   `json:"shape"`
	DType    string  `json:"dtype"`
	Params   int     `json:"params"`
	Bytes    int     `json:"bytes"`
	Bits     float64 `json:"bits_per_param"`
	RMSError float64 `json:"rms_error"`
	MaxError float64 `json:"max_abs_error"`
	RelRMS   float64 `json:"relative_rms_error"` // RMS error / RMS weight
}

// FolderResult summarises QuantizeFolder.
type FolderResult struct {
	In              string         `json:"in"`
	Out             string         `json:"out"`
	Type            bnb.Type       `json:"type"`
	BlockSize       int            `json:"block_size"`
	Double          bool           `json:"double_quant"`
	Quantized       []TensorReport `json:"quantized"`
	Kept            []string       `json:"kept"`
	QuantParams     int64          `json:"quantized_params"`
	QuantBytes      int64          `json:"quantized_bytes"`
	BitsPerParam    float64        `json:"bits_per_param"` // over the quantised linear weights
	TotalParams     int64          `json:"total_params"`
	InBytes         int64          `json:"in_weight_bytes"`
	OutBytes        int64          `json:"out_weight_bytes"`
	FileBytes       int64          `json:"file_bytes"` // size of the written weight files
	Shards          int            `json:"shards"`     // weight files written (1: model.safetensors)
	MaxRelRMS       float64        `json:"max_relative_rms_error"`
	CopiedFiles     []string       `json:"copied_files"`
	QuantizationCfg BnBConfig      `json:"quantization_config"`
}

var layerRE = regexp.MustCompile(`(^|\.)layers\.\d+\.`)

// isLinearWeight reports whether a checkpoint tensor is the weight of a linear layer inside a decoder layer
// (attention and MLP projections): a 2-D floating-point "<module>.weight" under "...layers.N.".
func isLinearWeight(name string, info safetensors.TensorInfo) bool {
	if !strings.HasSuffix(name, ".weight") || len(info.Shape) != 2 || !info.DType.IsFloat() {
		return false
	}
	if !layerRE.MatchString(name) || strings.Contains(name, "embed") || strings.Contains(name, "lm_head") {
		return false
	}
	return true
}

func skipped(module string, skip []string) bool {
	for _, s := range skip {
		if s != "" && strings.Contains(module, s) {
			return true
		}
	}
	return false
}

// QuantizeFolder writes at out a copy of the Hugging Face folder in whose decoder-layer linear weights are
// stored as transformers stores bitsandbytes weights, with quantization_config added to config.json.
// Embeddings, norms, biases and lm_head keep their dtype and bytes; tokenizer, generation and other
// non-weight files are copied. out appears only when complete.
func QuantizeFolder(in, out string, opt FolderOptions) (*FolderResult, error) {
	return QuantizeFolderContext(context.Background(), in, out, opt)
}

// QuantizeFolderContext is QuantizeFolder stopped by ctx between tensors: a cancelled run returns ctx's error
// and leaves nothing at out and no temporary behind.
//
// complexity: options, the plan (which tensors, their headers and shards) and the streamed write share the plan's tables.
func QuantizeFolderContext(ctx context.Context, in, out string, opt FolderOptions) (*FolderResult, error) {
	if opt.Type == "" {
		opt.Type = bnb.NF4
	}
	if opt.BlockSize == 0 {
		opt.BlockSize = bnb.DefaultBlockSize
	}
	switch opt.Type {
	case bnb.NF4, bnb.FP4:
		if !bnb.ValidBlockSize(opt.BlockSize) {
			return nil, fmt.Errorf("block size %d is not one of 32, 64, ..., 4096", opt.BlockSize)
		}
	case bnb.Int8:
		if opt.Double {
			return nil, fmt.Errorf("double quantisation applies to nf4/fp4 only, not int8")
		}
	default:
		return nil, fmt.Errorf("unknown quantisation type %q (want nf4, fp4 or int8)", opt.Type)
	}
	if opt.Threads <= 0 {
		opt.Threads = 1
	}
	if sameDir(in, out) {
		return nil, fmt.Errorf("output folder %s is the input folder", out)
	}
	if err := outRule.Check(out, opt.Force); err != nil {
		return nil, err
	}
	if _, err := models.Open(in); err != nil { // what in is when it is not a model folder, and what to do
		return nil, fmt.Errorf("quantize: input: %w", err)
	}
	in, cleanup, err := ggufconv.AsFolder(in, out) // a GGUF base is read through a Hugging Face folder
	if err != nil {
		return nil, fmt.Errorf("quantize: input: %w", err)
	}
	defer cleanup()
	cfgPath := filepath.Join(in, "config.json")
	cfgRaw, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", cfgPath, err)
	}
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(cfgRaw, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", cfgPath, err)
	}
	if _, ok := cfg["quantization_config"]; ok {
		return nil, fmt.Errorf("%s already has a quantization_config: the model is already quantised", cfgPath)
	}
	ckpt, err := safetensors.OpenCheckpoint(in) // names .bin-only weights and what to do
	if err != nil {
		return nil, err
	}
	defer ckpt.Close()

	res := &FolderResult{In: in, Out: out, Type: opt.Type, BlockSize: opt.BlockSize, Double: opt.Double}
	if opt.Type == bnb.Int8 {
		res.BlockSize = 0
	}
	var skipList []string
	if len(opt.Skip) > 0 {
		skipList = append([]string{"lm_head"}, opt.Skip...)
	}
	res.QuantizationCfg = NewBnBConfig(opt.Type, opt.Double, "float32", skipList)

	rd, err := safetensors.NewReader(ckpt)
	if err != nil {
		return nil, err
	}
	defer rd.Close()

	// Plan: every output tensor in input-name order (a quantised weight's tensors together), with its size,
	// before anything is quantised; then shard and stream.
	var jobs []*qjob
	var hs []safetensors.Header
	var group []int
	var src []*qjob // per output tensor: its quantisation job, nil for a tensor copied as is
	for _, name := range ckpt.Names() {
		info, _, _ := ckpt.Info(name)
		if bnb.IsAuxTensor(name) {
			return nil, fmt.Errorf("%s: tensor %q is bitsandbytes state: the model is already quantised", in, name)
		}
		res.TotalParams += int64(info.Elems())
		res.InBytes += info.End - info.Begin
		if isLinearWeight(name, info) && !skipped(bnb.ModulePrefix(name), opt.Skip) {
			jobs = append(jobs, &qjob{name: name, info: info, done: make(chan struct{})})
			continue
		}
		res.Kept = append(res.Kept, name)
	}
	if len(jobs) == 0 {
		return nil, fmt.Errorf("%s: no linear weights under model.layers.N to quantise", in)
	}
	offsets := make([]float32, len(jobs))
	if opt.Double && opt.Type != bnb.Int8 { // the quant_state JSON records the mean block absmax: one read to learn it
		if err := parallel(opt.Threads, len(jobs), func(i int) error {
			w, err := rd.Float32s(jobs[i].name)
			if err != nil {
				return err
			}
			offsets[i] = bnb.NestedOffsetOf(w, opt.BlockSize)
			return nil
		}); err != nil {
			return nil, err
		}
	}
	ji := 0
	for _, name := range ckpt.Names() {
		info, _, _ := ckpt.Info(name)
		if ji < len(jobs) && jobs[ji].name == name {
			j := jobs[ji]
			j.hs = bnb.TensorHeaders(name, info.Shape, string(info.DType), opt.Type, opt.BlockSize, opt.Double, offsets[ji])
			j.left = len(j.hs)
			for _, h := range j.hs { // one group: transformers reads a weight's quantisation state from its shard
				hs, group, src = append(hs, h), append(group, -1-ji), append(src, j)
			}
			ji++
			continue
		}
		group = append(group, len(hs)) // a group of its own
		hs, src = append(hs, safetensors.Header{Name: name, DType: info.DType, Shape: info.Shape}), append(src, nil)
	}
	for _, h := range hs {
		res.OutBytes += h.Bytes()
	}
	sharded := len(ckpt.Files) > 1 || fileExists(filepath.Join(in, safetensors.IndexName))
	shards := safetensors.PlanShards(hs, group, opt.MaxShardSize, sharded)
	res.Shards = len(shards)

	newCfg, err := addQuantConfig(cfgRaw, res.QuantizationCfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfgPath, err)
	}
	err = atomicfile.Dir(out, func(tmp string) error {
		if err := writeQuantized(ctx, tmp, rd, hs, src, shards, jobs, opt); err != nil {
			return err
		}
		for _, sh := range shards {
			st := filepath.Join(tmp, sh.File)
			if err := os.Chmod(st, 0o644); err != nil {
				return err
			}
			if fi, err := os.Stat(st); err == nil {
				res.FileBytes += fi.Size()
			}
		}
		if err := os.WriteFile(filepath.Join(tmp, "config.json"), newCfg, 0o644); err != nil {
			return err
		}
		copied, err := copyAuxFiles(in, tmp)
		res.CopiedFiles = copied
		return err
	})
	if err != nil {
		return nil, err
	}
	for _, j := range jobs {
		r := j.report
		res.Quantized = append(res.Quantized, r)
		res.QuantParams += int64(r.Params)
		res.QuantBytes += int64(r.Bytes)
		res.MaxRelRMS = math.Max(res.MaxRelRMS, r.RelRMS)
	}
	res.BitsPerParam = float64(8*res.QuantBytes) / float64(res.QuantParams)
	return res, nil
}

// qjob is one weight to quantise: its planned output headers, then (once done is closed) its tensors' bytes.
type qjob struct {
	name   string
	info   safetensors.TensorInfo
	hs     []safetensors.Header
	done   chan struct{}
	out    map[string][]byte
	report TensorReport
	err    error
	left   int // output tensors not yet written
}

// writeQuantized streams the planned tensors into the shards: copied tensors straight from the input (pread),
// quantised ones from a window of opt.Threads jobs quantised ahead of the writer in parallel, each job's memory
// released once its tensors are written.
func writeQuantized(ctx context.Context, dir string, rd *safetensors.Reader, hs []safetensors.Header, src []*qjob, shards []safetensors.Shard, jobs []*qjob, opt FolderOptions) error {
	window := make(chan struct{}, opt.Threads)
	quit := make(chan struct{})
	defer close(quit)
	var mu sync.Mutex
	done := 0
	go func() {
		for _, j := range jobs {
			select {
			case window <- struct{}{}:
			case <-quit:
				return
			}
			go func(j *qjob) {
				defer close(j.done)
				var ts []safetensors.Tensor
				j.report, ts, j.err = quantizeTensor(rd, j.name, j.info, opt)
				j.out = make(map[string][]byte, len(ts))
				for _, t := range ts {
					j.out[t.Name] = t.Data
				}
				mu.Lock()
				done++
				if opt.Progress != nil {
					opt.Progress(done, len(jobs))
				}
				mu.Unlock()
			}(j)
		}
	}()
	return safetensors.WriteShards(dir, hs, shards, func(i int, w io.Writer) error {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("quantize interrupted: %w", err)
		}
		j := src[i]
		if j == nil {
			return rd.CopyRaw(hs[i].Name, w)
		}
		<-j.done
		if j.err != nil {
			return j.err
		}
		b, ok := j.out[hs[i].Name]
		if !ok {
			return fmt.Errorf("quantise %s: no tensor %s in the quantised output", j.name, hs[i].Name)
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
		if j.left--; j.left == 0 {
			j.out = nil
			<-window // the next job may start
		}
		return nil
	})
}

// parallel runs f(0..n-1) on up to threads goroutines and returns the first error.
func parallel(threads, n int, f func(i int) error) error {
	errs := make([]error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for t := 0; t < min(max(threads, 1), n); t++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				errs[i] = f(i)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return errors.Join(errs...)
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// quantizeTensor quantises one weight and measures its reconstruction error.
func quantizeTensor(rd *safetensors.Reader, name string, info safetensors.TensorInfo, opt FolderOptions) (TensorReport, []safetensors.Tensor, error) {
	w, err := rd.Float32s(name)
	if err != nil {
		return TensorReport{}, nil, err
	}
	var q *bnb.Weight
	if opt.Type == bnb.Int8 {
		q, err = bnb.Quantize8(w, info.Shape)
	} else {
		q, err = bnb.Quantize4(opt.Type, w, info.Shape, opt.BlockSize, opt.Double)
	}
	if err != nil {
		return TensorReport{}, nil, fmt.Errorf("quantise %s: %w", name, err)
	}
	deq := make([]float32, len(w))
	q.Dequantize(deq)
	var se, sw, mx float64
	for i, v := range w {
		d := float64(deq[i]) - float64(v)
		se += d * d
		sw += float64(v) * float64(v)
		mx = math.Max(mx, math.Abs(d))
	}
	r := TensorReport{Name: name, Shape: info.Shape, DType: string(info.DType), Params: len(w), Bytes: q.Bytes(),
		Bits: q.BitsPerParam(), RMSError: math.Sqrt(se / float64(len(w))), MaxError: mx}
	if sw > 0 {
		r.RelRMS = math.Sqrt(se / sw)
	}
	return r, bnb.ToTensors(name, q, string(info.DType)), nil
}

// addQuantConfig inserts "quantization_config" as the last key of the top-level config object, keeping the
// rest of the file byte for byte.
func addQuantConfig(cfg []byte, qc BnBConfig) ([]byte, error) {
	trimmed := bytes.TrimRight(cfg, " \t\r\n")
	if len(trimmed) == 0 || trimmed[len(trimmed)-1] != '}' {
		return nil, fmt.Errorf("config is not a JSON object")
	}
	block, err := json.MarshalIndent(qc, "  ", "  ")
	if err != nil {
		return nil, err
	}
	body := bytes.TrimRight(trimmed[:len(trimmed)-1], " \t\r\n")
	var b bytes.Buffer
	b.Write(body)
	if body[len(body)-1] != '{' {
		b.WriteString(",")
	}
	b.WriteString("\n  \"quantization_config\": ")
	b.Write(block)
	b.WriteString("\n}\n")
	var check map[string]any
	if err := json.Unmarshal(b.Bytes(), &check); err != nil {
		return nil, fmt.Errorf("adding quantization_config: %w", err)
	}
	return b.Bytes(), nil
}

// copyAuxFiles copies the regular files of in that are not weights or config.json (tokenizer, generation
// config, chat template, README, ...) into out.
func copyAuxFiles(in, out string) ([]string, error) {
	ents, err := os.ReadDir(in)
	if err != nil {
		return nil, err
	}
	var copied []string
	for _, e := range ents {
		name := e.Name()
		if !e.Type().IsRegular() || strings.HasPrefix(name, ".") || name == "config.json" || name == safetensors.IndexName {
			continue
		}
		switch strings.ToLower(filepath.Ext(name)) {
		case ".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack":
			continue
		}
		if err := copyFile(filepath.Join(in, name), filepath.Join(out, name)); err != nil {
			return nil, err
		}
		copied = append(copied, name)
	}
	sort.Strings(copied)
	return copied, nil
}

// outRule is quantize's rule for an existing OUT: empty or a previous quantised output (config.json with
// quantization_config) is replaced, anything else only with --force.
var outRule = outdir.Rule{Command: "quantize", OwnDesc: "a quantised model folder (config.json with quantization_config)",
	Own: func(dir string) bool {
		var cfg map[string]json.RawMessage
		b, err := os.ReadFile(filepath.Join(dir, "config.json"))
		if err != nil || json.Unmarshal(b, &cfg) != nil {
			return false
		}
		_, ok := cfg["quantization_config"]
		return ok
	}}

// sameDir reports whether a and b name the same folder (b may not exist yet).
func sameDir(a, b string) bool {
	aa, err1 := filepath.Abs(a)
	bb, err2 := filepath.Abs(b)
	if err1 != nil || err2 != nil {
		return false
	}
	if aa == bb {
		return true
	}
	sa, err1 := os.Stat(aa)
	sb, err2 := os.Stat(bb)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

func copyFile(src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	g, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(g, f); err != nil {
		g.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return g.Close()
}
