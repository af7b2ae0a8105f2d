package quant

import (
	"bytes"
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
	"github.com/lorakit/lorakit/models/safetensors"
)

// FolderOptions configure QuantizeFolder.
type FolderOptions struct {
	Type      Type // nf4 (default), fp4 or int8
	BlockSize int  // 4-bit block size (default 64); int8 always uses one block per row
	Double    bool // double-quantise the 4-bit absmax values
	// Skip lists module-name substrings left unquantised (transformers' llm_int8_skip_modules rule: a module
	// whose dotted name contains any entry is skipped). lm_head and embeddings are never quantised.
	Skip []string
	// Force replaces an existing non-empty out that is not a previous quantised output (never the input).
	Force    bool
	Threads  int                   // tensors quantised in parallel (default 1)
	Progress func(done, total int) // called after each tensor; may be nil
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
	Type            Type           `json:"type"`
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
	FileBytes       int64          `json:"file_bytes"` // size of the written model.safetensors
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
	if opt.Type == "" {
		opt.Type = NF4
	}
	if opt.BlockSize == 0 {
		opt.BlockSize = DefaultBlockSize
	}
	switch opt.Type {
	case NF4, FP4:
		if !ValidBlockSize(opt.BlockSize) {
			return nil, fmt.Errorf("block size %d is not one of 32, 64, ..., 4096", opt.BlockSize)
		}
	case Int8:
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
	if err := checkOut(out, opt.Force); err != nil {
		return nil, err
	}
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
	ckpt, err := safetensors.OpenCheckpoint(in)
	if err != nil {
		if errors.Is(err, safetensors.ErrNoWeights) {
			for _, bin := range []string{"pytorch_model.bin", "pytorch_model.bin.index.json"} {
				if _, e := os.Stat(filepath.Join(in, bin)); e == nil {
					return nil, fmt.Errorf("%s has %s (PyTorch pickle) but no safetensors weights: convert the model to safetensors first", in, bin)
				}
			}
		}
		return nil, err
	}
	defer ckpt.Close()

	res := &FolderResult{In: in, Out: out, Type: opt.Type, BlockSize: opt.BlockSize, Double: opt.Double}
	if opt.Type == Int8 {
		res.BlockSize = 0
	}
	var skipList []string
	if len(opt.Skip) > 0 {
		skipList = append([]string{"lm_head"}, opt.Skip...)
	}
	res.QuantizationCfg = NewBnBConfig(opt.Type, opt.Double, "float32", skipList)

	type job struct {
		name string
		info safetensors.TensorInfo
	}
	var jobs []job
	var tensors []safetensors.Tensor
	for _, name := range ckpt.Names() {
		info, _, _ := ckpt.Info(name)
		if IsAuxTensor(name) {
			return nil, fmt.Errorf("%s: tensor %q is bitsandbytes state: the model is already quantised", in, name)
		}
		res.TotalParams += int64(info.Elems())
		res.InBytes += info.End - info.Begin
		if isLinearWeight(name, info) && !skipped(ModulePrefix(name), opt.Skip) {
			jobs = append(jobs, job{name, info})
			continue
		}
		raw, err := ckpt.Bytes(name)
		if err != nil {
			return nil, err
		}
		tensors = append(tensors, safetensors.Tensor{Name: name, DType: info.DType, Shape: info.Shape, Data: raw})
		res.Kept = append(res.Kept, name)
	}
	if len(jobs) == 0 {
		return nil, fmt.Errorf("%s: no linear weights under model.layers.N to quantise", in)
	}

	reports := make([]TensorReport, len(jobs))
	outs := make([][]safetensors.Tensor, len(jobs))
	errs := make([]error, len(jobs))
	var mu sync.Mutex
	done := 0
	var wg sync.WaitGroup
	next := make(chan int)
	for t := 0; t < min(opt.Threads, len(jobs)); t++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				reports[i], outs[i], errs[i] = quantizeTensor(ckpt, jobs[i].name, jobs[i].info, opt)
				mu.Lock()
				done++
				if opt.Progress != nil {
					opt.Progress(done, len(jobs))
				}
				mu.Unlock()
			}
		}()
	}
	for i := range jobs {
		next <- i
	}
	close(next)
	wg.Wait()
	for i := range jobs {
		if errs[i] != nil {
			return nil, errs[i]
		}
		tensors = append(tensors, outs[i]...)
		r := reports[i]
		res.Quantized = append(res.Quantized, r)
		res.QuantParams += int64(r.Params)
		res.QuantBytes += int64(r.Bytes)
		res.MaxRelRMS = math.Max(res.MaxRelRMS, r.RelRMS)
	}
	res.BitsPerParam = float64(8*res.QuantBytes) / float64(res.QuantParams)
	for _, t := range tensors {
		res.OutBytes += int64(len(t.Data))
	}

	newCfg, err := addQuantConfig(cfgRaw, res.QuantizationCfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfgPath, err)
	}
	err = atomicfile.Dir(out, func(tmp string) error {
		st := filepath.Join(tmp, "model.safetensors")
		if err := safetensors.Write(st, tensors, map[string]string{"format": "pt"}); err != nil {
			return err
		}
		if err := os.Chmod(st, 0o644); err != nil {
			return err
		}
		if fi, err := os.Stat(st); err == nil {
			res.FileBytes = fi.Size()
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
	return res, nil
}

// quantizeTensor quantises one weight and measures its reconstruction error.
func quantizeTensor(c *safetensors.Checkpoint, name string, info safetensors.TensorInfo, opt FolderOptions) (TensorReport, []safetensors.Tensor, error) {
	w, err := c.Float32s(name)
	if err != nil {
		return TensorReport{}, nil, err
	}
	var q *Blocks4
	if opt.Type == Int8 {
		q, err = Quantize8(w, info.Shape)
	} else {
		q, err = Quantize4(opt.Type, w, info.Shape, opt.BlockSize, opt.Double)
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
	return r, ToTensors(name, q, string(info.DType)), nil
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

// checkOut refuses to replace an existing folder that is neither empty nor a previous quantised output (its
// config.json has quantization_config), unless force.
func checkOut(out string, force bool) error {
	st, err := os.Stat(out)
	if err != nil {
		return nil
	}
	if !st.IsDir() {
		return fmt.Errorf("output %s exists and is not a folder", out)
	}
	ents, _ := os.ReadDir(out)
	if len(ents) == 0 || force {
		return nil
	}
	var cfg map[string]json.RawMessage
	if b, err := os.ReadFile(filepath.Join(out, "config.json")); err == nil && json.Unmarshal(b, &cfg) == nil {
		if _, ok := cfg["quantization_config"]; ok {
			return nil
		}
	}
	return fmt.Errorf("output folder %s exists and is not a quantised model folder; refusing to replace it: remove it, choose another OUT, or pass --force", out)
}

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
