// Package merge folds LoRA adapters into a base checkpoint: W' = W + Σ wᵢ·sᵢ·Bᵢ·Aᵢ (a DoRA adapter:
// W' = m⊙(W + s·B·A)/‖W + s·B·A‖ per row), computed in f32 and rounded once to the output dtype, written tensor by tensor into a new Hugging Face folder. Tensors no adapter touches
// are copied bit for bit; the folder appears at its final path only when complete.
package merge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/lorakit/lorakit/internal/atomicfile"
	"github.com/lorakit/lorakit/internal/outdir"
	"github.com/lorakit/lorakit/internal/progress"
	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/ggufconv"
	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/safetensors"
)

// Source is one adapter to merge with its weight wᵢ (1 for a plain merge).
type Source struct {
	Dir    string
	Weight float64
	// Adapter is loaded by Run (with lora.Load) when nil. Beyond its linear pairs, a merge applies its Saved
	// tensors (modules_to_save, biases: they replace the base tensor), its Embed pairs (the table [vocab, dim]
	// gets wᵢ·sᵢ·(B·A)ᵀ) and its BaseLayers (they replace the base tensor before the deltas are added).
	Adapter *lora.Adapter
}

// Options configure Run.
type Options struct {
	Adapters []Source // Run loads each Source.Adapter that is nil (in place)
	// DType of the output's float tensors: "auto" or "" keeps each tensor's dtype (bf16 for dequantised 4-bit
	// weights), else "f32", "bf16" or "f16" for all of them.
	DType string
	// MaxShardSize in bytes (0: 5 GB, as transformers' save_pretrained). The output is sharded with an index when
	// the base is sharded or the weights exceed it.
	MaxShardSize int64
	// Requantize "nf4" writes the merged linear weights of a 4-bit base in NF4 again (extra rounding).
	Requantize string
	// Verify runs base+adapters and the merged model on a few token sequences before publishing the folder.
	Verify bool
	// Force replaces an existing non-empty OUT that is not a previous merge output (never the base or an adapter).
	Force   bool
	Threads int
	// Pool runs the delta products (nil: a pool of Threads workers).
	Pool *kernels.Pool
	// Log receives progress and warnings (nil: silent).
	Log io.Writer
}

// Result describes a finished merge.
type Result struct {
	Out           string        `json:"out"`
	Base          string        `json:"base"`
	Adapters      []AdapterInfo `json:"adapters"`
	DType         string        `json:"dtype"`
	Tensors       int           `json:"tensors"`
	Merged        int           `json:"merged"`
	Replaced      int           `json:"replaced"`
	Copied        int           `json:"copied_bit_for_bit"`
	Converted     int           `json:"converted"`
	Dequantized   int           `json:"dequantized"`
	Requantized   int           `json:"requantized"`
	Shards        int           `json:"shards"`
	Bytes         int64         `json:"bytes"`
	LargestTensor int64         `json:"largest_tensor_bytes"`
	PeakRSS       int64         `json:"peak_rss_bytes,omitempty"` // of the whole process, when known (Linux)
	Warnings      []string      `json:"warnings,omitempty"`
	Verify        *VerifyResult `json:"verify,omitempty"`
}

// AdapterInfo summarises one merged adapter.
type AdapterInfo struct {
	Dir      string  `json:"dir"`
	Weight   float64 `json:"weight"`
	Modules  int     `json:"modules"`
	Saved    int     `json:"modules_to_save_tensors"`
	Rank     int     `json:"r"`
	Alpha    float64 `json:"lora_alpha"`
	RSLoRA   bool    `json:"use_rslora"`
	BaseName string  `json:"base_model_name_or_path,omitempty"`
}

// DefaultMaxShardSize is transformers' save_pretrained default ("5GB").
const DefaultMaxShardSize = safetensors.DefaultMaxShardSize

// kind says how an output tensor is produced.
type kind int

const (
	kCopy    kind = iota // raw bytes of the base tensor
	kConvert             // base float tensor in another dtype
	kMerge               // base + Σ deltas
	kReplace             // a modules_to_save tensor from an adapter
	kPrecomp             // bytes computed during planning (requantised NF4)
	kDequant             // dequantised 4-bit base weight, untouched by adapters
)

type delta struct {
	pair   *lora.Pair
	weight float32 // wᵢ·sᵢ
	embed  bool    // an embedding pair: the weight gets (B·A)ᵀ
	// tokens, instead of a pair, are trained rows (trainable_token_indices) that replace rows of the table,
	// after every pair's delta (PEFT's index_copy).
	tokens *lora.TokenRows
}

type item struct {
	hdr    safetensors.Header
	kind   kind
	src    string // base tensor name
	deltas []delta
	saved  *safetensors.Tensor
	data   []byte
	bytes  int64
}

type plan struct {
	base     *safetensors.Checkpoint
	rd       *safetensors.Reader // pread access to the base tensors
	items    []*item
	quant    map[string]*quantInfo // base weight name → 4-bit info
	config   map[string]json.RawMessage
	cfgDirty bool
	res      *Result
	outDT    safetensors.DType // "" = auto
	pool     *kernels.Pool
	log      io.Writer // Options.Log: progress lines and warnings (may be nil)
}

// Run merges the adapters of opt into the checkpoint folder base and writes the result to out. It reads top to
// bottom as the merge's steps: check the arguments, open the base, collect the adapters' deltas and whole
// tensors, plan every output tensor, then write the folder (atomically) and verify it if asked.
func Run(ctx context.Context, base, out string, opt Options) (*Result, error) {
	outDT, err := checkArgs(base, out, opt)
	if err != nil {
		return nil, err
	}
	res := &Result{Out: out, Base: base, DType: opt.DType}
	if res.DType == "" {
		res.DType = "auto"
	}
	name := base // what messages call the base
	base, cleanup, err := ggufconv.AsFolder(base, out)
	if err != nil {
		return nil, fmt.Errorf("merge: base: %w", err)
	}
	defer cleanup()
	cfgBytes, config, err := readConfig(base)
	if err != nil {
		return nil, err
	}
	ckpt, err := openBase(base)
	if err != nil {
		return nil, err
	}
	defer ckpt.Close()
	if opt.Pool == nil {
		opt.Pool = kernels.NewPool(opt.Threads)
	}
	rd, err := safetensors.NewReader(ckpt)
	if err != nil {
		return nil, fmt.Errorf("merge: base: %w", err)
	}
	defer rd.Close()
	p := &plan{base: ckpt, rd: rd, config: config, res: res, outDT: outDT, pool: opt.Pool, log: opt.Log}
	if err := p.checkQuantized(name, opt); err != nil {
		return nil, err
	}
	c, err := p.collect(name, opt.Adapters)
	if err != nil {
		return nil, err
	}
	if opt.Requantize != "" {
		p.logf("re-quantising the merged weights to NF4 (held in memory until written)")
	}
	if err := p.build(ctx, c.deltas, c.saved, opt); err != nil {
		return nil, err
	}
	hs, shards := p.layout(len(ckpt.Files) > 1 || fileExists(filepath.Join(base, safetensors.IndexName)), opt.MaxShardSize)
	if err := p.editConfig(opt); err != nil {
		return nil, err
	}
	err = atomicfile.Dir(out, func(tmp string) error { return p.write(ctx, base, tmp, cfgBytes, hs, shards, opt) })
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("merge interrupted, nothing written at %s: %w", out, ctx.Err())
		}
		return nil, err
	}
	res.PeakRSS = peakRSS()
	return res, nil
}

// checkArgs refuses what Run cannot do or must not overwrite, before anything is read: no adapter, an unknown
// dtype or --requantize, an output that is the base or an adapter, an existing output that is not ours.
func checkArgs(base, out string, opt Options) (safetensors.DType, error) {
	if len(opt.Adapters) == 0 {
		return "", errors.New("merge: no adapter given")
	}
	outDT, err := parseDType(opt.DType)
	if err != nil {
		return "", err
	}
	if opt.Requantize != "" && opt.Requantize != "nf4" {
		return "", fmt.Errorf("merge: --requantize %q: only \"nf4\" is supported", opt.Requantize)
	}
	if abs(base) == abs(out) {
		return "", fmt.Errorf("merge: output folder %s is the base folder", out)
	}
	for _, s := range opt.Adapters {
		if s.Dir != "" && abs(s.Dir) == abs(out) {
			return "", fmt.Errorf("merge: output folder %s is an adapter folder", out)
		}
	}
	if err := outRule.Check(out, opt.Force); err != nil {
		return "", err
	}
	if _, err := models.Open(base); err != nil { // what base is when it is not a model folder, and what to do
		return "", fmt.Errorf("merge: base: %w", err)
	}
	return outDT, nil
}

// outRule is merge's rule for an existing OUT: empty or a previous merge output is replaced, anything else
// only with --force.
var outRule = outdir.Rule{Command: "merge", OwnDesc: "a previous lorakit merge output (lorakit_merge.json)",
	Own: func(dir string) bool { return fileExists(filepath.Join(dir, "lorakit_merge.json")) }}

// readConfig reads the base's config.json, raw (written back with only our edits) and parsed.
func readConfig(base string) ([]byte, map[string]json.RawMessage, error) {
	cfgBytes, err := os.ReadFile(filepath.Join(base, "config.json"))
	if err != nil {
		return nil, nil, fmt.Errorf("merge: base %s is not a Hugging Face model folder: %w", base, err)
	}
	var config map[string]json.RawMessage
	if err := json.Unmarshal(cfgBytes, &config); err != nil {
		return nil, nil, fmt.Errorf("merge: %s: %w", filepath.Join(base, "config.json"), err)
	}
	return cfgBytes, config, nil
}

// openBase opens the base's safetensors weights, naming a PyTorch pickle when that is all the folder has.
func openBase(base string) (*safetensors.Checkpoint, error) {
	ckpt, err := safetensors.OpenCheckpoint(base) // names .bin-only weights and what to do
	if err != nil {
		return nil, fmt.Errorf("merge: base: %w", err)
	}
	return ckpt, nil
}

// logf writes a progress line when Options.Log is set.
func (p *plan) logf(format string, a ...any) {
	if p.log != nil {
		fmt.Fprintf(p.log, format+"\n", a...)
	}
}

// warn records a warning in the result and logs it.
func (p *plan) warn(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	p.res.Warnings = append(p.res.Warnings, msg)
	p.logf("warning: %s", msg)
}

// checkQuantized finds the base's bitsandbytes weights and checks them against --requantize.
func (p *plan) checkQuantized(base string, opt Options) error {
	var err error
	if p.quant, err = findQuantized(p.base); err != nil {
		return fmt.Errorf("merge: base %s: %w", base, err)
	}
	if len(p.quant) > 0 && opt.Requantize == "" {
		dt := p.outDT
		if dt == "" {
			dt = safetensors.BF16
		}
		p.warn("the base is quantised with bitsandbytes (%d weights): writing dequantised weights in %s; the output loads as a regular model (with a 4-bit base, --requantize nf4 keeps NF4)", len(p.quant), dt)
	}
	if opt.Requantize != "" && len(p.quant) == 0 {
		return fmt.Errorf("merge: --requantize nf4 needs a 4-bit (bitsandbytes) base; %s is not quantised (use lorakit quantize on the merged folder)", base)
	}
	if opt.Requantize != "" {
		p.warn("Merge lora module to 4-bit linear may get different generations due to rounding errors: the merged weights are rounded to NF4 a second time")
	}
	return nil
}

// collected is what the adapters contribute, by output tensor name.
type collected struct {
	deltas    map[string][]delta
	saved     map[string]*safetensors.Tensor // tensors that replace the base's whole
	savedBy   map[string]string              // which adapter folder saved each
	baseLayer map[string]bool                // saved tensors that are a starting point for deltas (PEFT base_layer)
}

// collect loads each adapter that is not loaded yet (in place in srcs), checks it against the base and gathers
// its deltas and whole tensors; a tensor two adapters both replace, or one replaces and another adapts, is an
// error.
func (p *plan) collect(base string, srcs []Source) (*collected, error) {
	c := &collected{deltas: map[string][]delta{}, saved: map[string]*safetensors.Tensor{}, savedBy: map[string]string{},
		baseLayer: map[string]bool{}}
	for i := range srcs {
		if err := p.addAdapter(c, base, &srcs[i]); err != nil {
			return nil, err
		}
	}
	if err := checkDoRA(srcs); err != nil {
		return nil, err
	}
	for name := range c.saved {
		if len(c.deltas[name]) > 0 && !c.baseLayer[name] {
			return nil, fmt.Errorf("merge: tensor %q is saved whole by one adapter and LoRA-adapted by another", name)
		}
	}
	return c, nil
}

// addAdapter adds one adapter's pairs, base layers and modules_to_save to c and reports it in the result.
func (p *plan) addAdapter(c *collected, base string, s *Source) error {
	if s.Adapter == nil {
		var err error
		if s.Adapter, err = lora.Load(s.Dir); err != nil {
			return fmt.Errorf("merge: %w", err)
		}
	}
	a := s.Adapter
	if math.IsNaN(s.Weight) || math.IsInf(s.Weight, 0) {
		return fmt.Errorf("merge: adapter %s: weight %v is not finite", s.Dir, s.Weight)
	}
	if err := a.Check(p.shapeOf); err != nil {
		return fmt.Errorf("merge: adapter %s does not fit base %s:\n%w", s.Dir, base, err)
	}
	if err := p.checkEmbed(s); err != nil {
		return fmt.Errorf("merge: adapter %s does not fit base %s:\n%w", s.Dir, base, err)
	}
	for _, m := range a.Names() {
		pr := a.Modules[m]
		c.deltas[m+".weight"] = append(c.deltas[m+".weight"], delta{pair: pr, weight: float32(s.Weight) * pr.Scale})
	}
	for _, m := range slices.Sorted(maps.Keys(a.Embed)) {
		pr := a.Embed[m]
		c.deltas[m+".weight"] = append(c.deltas[m+".weight"], delta{pair: pr, weight: float32(s.Weight) * pr.Scale, embed: true})
	}
	if err := p.addTokens(c, s); err != nil {
		return err
	}
	if err := p.addBaseLayers(c, s); err != nil {
		return err
	}
	if err := p.addSaved(c, s); err != nil {
		return err
	}
	info := AdapterInfo{Dir: s.Dir, Weight: s.Weight, Modules: len(a.Modules), Saved: len(a.Saved), Rank: a.Config.R,
		Alpha: a.Config.Alpha, RSLoRA: a.Config.UseRSLoRA, BaseName: a.Config.BaseModel}
	p.res.Adapters = append(p.res.Adapters, info)
	p.logf("adapter %s: %d modules, r=%d, alpha=%g, weight %g", s.Dir, len(a.Modules), a.Config.R, a.Config.Alpha, s.Weight)
	return nil
}

// addBaseLayers takes the base layers PEFT saved with the adapter (the embedding it was trained on) that differ
// from the base's own: the deltas are added on top of the adapter's copy, as PEFT loads it.
func (p *plan) addBaseLayers(c *collected, s *Source) error {
	a := s.Adapter
	for _, name := range slices.Sorted(maps.Keys(a.BaseLayers)) {
		t := a.BaseLayers[name]
		same, err := p.sameAsBase(p.baseName(name), t)
		if err != nil {
			return fmt.Errorf("merge: adapter %s: %w", s.Dir, err)
		}
		if same {
			continue // PEFT saved the embedding it was trained on: the base's own, bit for bit
		}
		if prev, dup := c.savedBy[name]; dup {
			return fmt.Errorf("merge: tensor %q is replaced by both %s and %s; cannot combine", name, prev, s.Dir)
		}
		c.saved[name], c.savedBy[name] = &t, s.Dir
		c.baseLayer[name] = true
		p.warn("adapter %s: its saved base layer %q differs from the base: merging on top of the adapter's copy (PEFT loads it into the base)", s.Dir, name)
	}
	return nil
}

// addSaved takes the adapter's modules_to_save tensors, which replace the base tensor whole.
func (p *plan) addSaved(c *collected, s *Source) error {
	for name, t := range s.Adapter.Saved {
		t := t
		if prev, dup := c.savedBy[name]; dup {
			return fmt.Errorf("merge: tensor %q is saved whole (modules_to_save) by both %s and %s; cannot combine", name, prev, s.Dir)
		}
		if err := p.checkSaved(name, t); err != nil {
			return fmt.Errorf("merge: adapter %s: %w", s.Dir, err)
		}
		if len(c.deltas[name]) > 0 {
			return fmt.Errorf("merge: tensor %q is both saved whole (modules_to_save) and LoRA-adapted", name)
		}
		c.saved[name], c.savedBy[name] = &t, s.Dir
		if s.Weight != 1 {
			p.warn("adapter %s: modules_to_save tensor %q replaces the base tensor whole; its weight %v is not applied", s.Dir, name, s.Weight)
		}
	}
	return nil
}

// layout lists the output tensors' headers and cuts them into shards (sharded when the base is, or when the
// weights exceed maxShard), and fills in the result's sizes.
func (p *plan) layout(sharded bool, maxShard int64) ([]safetensors.Header, []safetensors.Shard) {
	if maxShard <= 0 {
		maxShard = DefaultMaxShardSize
	}
	hs := make([]safetensors.Header, len(p.items))
	for i, it := range p.items {
		hs[i] = it.hdr
	}
	shards := safetensors.PlanShards(hs, nil, maxShard, sharded)
	p.res.Shards = len(shards)
	for _, it := range p.items {
		p.res.Bytes += it.bytes
		p.res.LargestTensor = max(p.res.LargestTensor, it.bytes)
	}
	p.res.Tensors = len(p.items)
	return hs, shards
}

// write fills the temporary output folder tmp: the base's other files, config.json, the weight shards, the
// provenance record, then (with Options.Verify) the check that the merged model's logits are base+adapter's.
func (p *plan) write(ctx context.Context, base, tmp string, cfgBytes []byte, hs []safetensors.Header, shards []safetensors.Shard, opt Options) error {
	bar := (*progress.Bar)(nil)
	if opt.Log != nil {
		bar = progress.New(opt.Log, "merge", p.res.Bytes, "B")
		defer bar.Stop() // ends the line when the merge stops early; nothing after Finish
	}
	if err := copyExtras(base, tmp); err != nil {
		return err
	}
	if err := p.writeConfig(tmp, cfgBytes); err != nil {
		return err
	}
	if err := p.writeShards(ctx, tmp, hs, shards, bar); err != nil {
		return err
	}
	if bar != nil {
		bar.Finish()
	}
	if err := writeProvenance(tmp, p.res, opt); err != nil {
		return err
	}
	if !opt.Verify {
		return nil
	}
	v, err := Verify(base, tmp, opt.Adapters, opt.Pool)
	if err != nil {
		return fmt.Errorf("merge: verify: %w", err)
	}
	p.res.Verify = v
	p.logf("verify: max |logit(base+adapter) − logit(merged)| = %.3g (bound %.3g); the adapter moves logits by up to %.3g", v.MaxAbsDiff, v.Bound, v.AdapterEffect)
	if !v.OK {
		return fmt.Errorf("merge: verify failed: %s", v.Reason)
	}
	if v.Reason != "" {
		p.warn("verify: %s", v.Reason)
	}
	return nil
}

func abs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return filepath.Clean(p)
	}
	return a
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func parseDType(s string) (safetensors.DType, error) {
	switch strings.ToLower(s) {
	case "", "auto":
		return "", nil
	case "f32", "float32", "fp32":
		return safetensors.F32, nil
	case "bf16", "bfloat16":
		return safetensors.BF16, nil
	case "f16", "float16", "fp16":
		return safetensors.F16, nil
	}
	return "", fmt.Errorf("merge: --dtype %q: want auto, f32, bf16 or f16", s)
}

// shapeOf gives the base [out, in] of a linear module for lora.Check.
func (p *plan) shapeOf(module string) (in, out int, ok bool) {
	name := module + ".weight"
	if module == "lm_head" && p.tiedHead() {
		name = embedName // LoRA on a tied head: merged into an untied copy of the embedding (see build)
	}
	if q := p.quant[name]; q != nil {
		if len(q.shape) != 2 {
			return 0, 0, false
		}
		return q.shape[1], q.shape[0], true
	}
	info, _, found := p.base.Info(name)
	if !found || len(info.Shape) != 2 || !info.DType.IsFloat() {
		return 0, 0, false
	}
	return info.Shape[1], info.Shape[0], true
}

// checkSaved validates a modules_to_save tensor against the base.
func (p *plan) checkSaved(name string, t safetensors.Tensor) error {
	info, _, ok := p.base.Info(name)
	if !ok {
		if q := p.quant[name]; q != nil {
			if !slices.Equal(q.shape, t.Shape) {
				return fmt.Errorf("modules_to_save tensor %q has shape %v but base (4-bit) is %v", name, t.Shape, q.shape)
			}
			return nil
		}
		if name == "lm_head.weight" && p.tied() {
			emb, _, ok := p.base.Info("model.embed_tokens.weight")
			if ok && slices.Equal(emb.Shape, t.Shape) {
				return nil // untied below: the base ties lm_head to the embedding
			}
		}
		return fmt.Errorf("modules_to_save tensor %q has no counterpart in the base (adapter made for another model?)", name)
	}
	if !slices.Equal(info.Shape, t.Shape) {
		return fmt.Errorf("modules_to_save tensor %q has shape %v but base is %v (adapter made for another model?)", name, t.Shape, info.Shape)
	}
	return nil
}

const embedName = "model.embed_tokens.weight"

// baseName is the base tensor that holds name: the embedding for lm_head.weight of a tied base.
func (p *plan) baseName(name string) string {
	if name == "lm_head.weight" && p.tiedHead() {
		return embedName
	}
	return name
}

// tiedHead reports whether the base has no lm_head tensor because config ties it to the embedding.
func (p *plan) tiedHead() bool {
	_, _, ok := p.base.Info("lm_head.weight")
	return !ok && p.quant["lm_head.weight"] == nil && p.tied()
}

// checkEmbed validates the embedding LoRA pairs of s against the base tables: lora_embedding_A is [r, vocab],
// lora_embedding_B is [dim, r] for a [vocab, dim] table.
func (p *plan) checkEmbed(s *Source) error {
	var errs []error
	for _, m := range slices.Sorted(maps.Keys(s.Adapter.Embed)) {
		pr := s.Adapter.Embed[m]
		info, _, ok := p.base.Info(m + ".weight")
		switch {
		case !ok || len(info.Shape) != 2 || !info.DType.IsFloat():
			errs = append(errs, fmt.Errorf("tensor %q: the base model has no embedding table %s.weight (adapter made for another model?)", lora.KeyPrefix+m+".lora_embedding_A", m))
		case info.Shape[0] != pr.In:
			errs = append(errs, fmt.Errorf("tensor %q has shape [%d %d] but base %s.weight is %v: vocabulary %d ≠ %d (adapter made for another model, or a resized vocabulary)",
				lora.KeyPrefix+m+".lora_embedding_A", pr.R, pr.In, m, info.Shape, pr.In, info.Shape[0]))
		case info.Shape[1] != pr.Out:
			errs = append(errs, fmt.Errorf("tensor %q has shape [%d %d] but base %s.weight is %v: embedding size %d ≠ %d (adapter made for another model?)",
				lora.KeyPrefix+m+".lora_embedding_B", pr.Out, pr.R, m, info.Shape, pr.Out, info.Shape[1]))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(s.Adapter.BaseLayers)) {
		t := s.Adapter.BaseLayers[name]
		info, _, ok := p.base.Info(p.baseName(name))
		if !ok || !slices.Equal(info.Shape, t.Shape) {
			want := "no such tensor"
			if ok {
				want = fmt.Sprint(info.Shape)
			}
			errs = append(errs, fmt.Errorf("tensor %q has shape %v but base %s is %s (a resized vocabulary is not supported; adapter made for another model?)",
				lora.KeyPrefix+strings.TrimSuffix(name, ".weight")+".base_layer.weight", t.Shape, name, want))
		}
	}
	return errors.Join(errs...)
}

// sameAsBase reports whether t holds the base tensor's values (PEFT saves an adapted embedding's base layer).
func (p *plan) sameAsBase(name string, t safetensors.Tensor) (bool, error) {
	if info, _, ok := p.base.Info(name); ok && info.DType == t.DType { // the usual case: compare bytes, streaming
		sec, _, err := p.section(name)
		if err != nil {
			return false, err
		}
		if sec.Size() != int64(len(t.Data)) {
			return false, nil
		}
		buf := make([]byte, 1<<20)
		for off := 0; off < len(t.Data); {
			n, err := sec.Read(buf)
			if n > 0 {
				if string(buf[:n]) != string(t.Data[off:off+n]) {
					return false, nil
				}
				off += n
			}
			if err != nil && off < len(t.Data) {
				return false, fmt.Errorf("read tensor %q: %w", name, err)
			}
		}
		return true, nil
	}
	w, err := p.readF32(name)
	if err != nil {
		return false, err
	}
	v := make([]float32, len(t.Data)/max(1, t.DType.Size()))
	if len(v) != len(w) {
		return false, nil
	}
	if err := safetensors.Decode(t.DType, t.Data, v); err != nil {
		return false, fmt.Errorf("tensor %q: %w", name, err)
	}
	for i := range v {
		if v[i] != w[i] && !(v[i] != v[i] && w[i] != w[i]) {
			return false, nil
		}
	}
	return true, nil
}

func (p *plan) tied() bool {
	v, ok := p.config["tie_word_embeddings"]
	if !ok {
		return true // transformers' PretrainedConfig default
	}
	var b bool
	return json.Unmarshal(v, &b) == nil && b
}

// build lists every output tensor and how to produce it.
func (p *plan) build(ctx context.Context, deltas map[string][]delta, saved map[string]*safetensors.Tensor, opt Options) error {
	names := p.base.Names()
	aux := map[string]bool{}
	for _, q := range p.quant {
		for _, a := range q.aux {
			aux[a] = true
		}
	}
	for _, name := range names {
		if aux[name] {
			continue
		}
		if q := p.quant[name]; q != nil {
			if err := p.addQuantized(ctx, name, q, deltas[name], saved[name], opt); err != nil {
				return err
			}
			continue
		}
		info, _, _ := p.base.Info(name)
		it := &item{src: name, hdr: safetensors.Header{Name: name, DType: info.DType, Shape: info.Shape}}
		dt := info.DType
		if p.outDT != "" && info.DType.IsFloat() {
			dt = p.outDT
		}
		switch {
		case saved[name] != nil && len(deltas[name]) > 0: // a PEFT base layer, then its LoRA delta
			it.kind, it.saved, it.deltas = kMerge, saved[name], deltas[name]
			p.res.Merged++
		case saved[name] != nil:
			it.kind, it.saved = kReplace, saved[name]
			p.res.Replaced++
		case len(deltas[name]) > 0:
			it.kind, it.deltas = kMerge, deltas[name]
			p.res.Merged++
		case dt != info.DType:
			it.kind = kConvert
			p.res.Converted++
		default:
			it.kind = kCopy
			p.res.Copied++
		}
		it.hdr.DType = dt
		p.items = append(p.items, it)
	}
	// A base whose lm_head is tied to the embedding: when an adapter changes either of the two, the merged model
	// unties them (lm_head.weight written, tie_word_embeddings false) so that it computes what base+adapter
	// computes: PEFT applies LoRA/modules_to_save to the embedding lookup and the output head separately.
	const head = "lm_head.weight"
	if p.tiedHead() && (saved[head] != nil || len(deltas[head]) > 0 || saved[embedName] != nil || pairDeltas(deltas[embedName])) {
		emb, _, ok := p.base.Info(embedName)
		if !ok {
			return fmt.Errorf("merge: the base ties lm_head to %s, which it does not have", embedName)
		}
		dt := emb.DType
		if p.outDT != "" {
			dt = p.outDT
		}
		it := &item{src: embedName, hdr: safetensors.Header{Name: head, DType: dt, Shape: emb.Shape}}
		deltas[head] = append(deltas[head], tokenDeltas(deltas[embedName])...) // the untied head keeps the trained rows
		var why string
		switch {
		case saved[head] != nil && len(deltas[head]) > 0: // a saved base layer of lm_head, then its LoRA
			it.kind, it.saved, it.deltas = kMerge, saved[head], deltas[head]
			p.res.Merged++
			why = "the adapter has LoRA on lm_head over its own saved lm_head base layer"
		case saved[head] != nil:
			it.kind, it.saved = kReplace, saved[head]
			p.res.Replaced++
			why = "modules_to_save has lm_head"
		case len(deltas[head]) > 0:
			it.kind, it.deltas = kMerge, deltas[head]
			p.res.Merged++
			why = "the adapter has LoRA on lm_head"
		case dt != emb.DType:
			it.kind = kConvert
			p.res.Converted++
			why = "the adapter changes embed_tokens"
		default:
			it.kind = kCopy
			p.res.Copied++
			why = "the adapter changes embed_tokens"
		}
		p.items = append(p.items, it)
		p.config["tie_word_embeddings"] = json.RawMessage("false")
		p.cfgDirty = true
		p.res.Warnings = append(p.res.Warnings, why+" but the base ties lm_head to embed_tokens: wrote lm_head.weight (the base embedding"+
			map[bool]string{true: " merged with the lm_head adapter", false: ""}[it.kind == kMerge]+") and set tie_word_embeddings=false, so the merged model computes base+adapter (PEFT's merge_and_unload would change the shared matrix for both)")
	}
	for _, it := range p.items {
		if it.kind == kPrecomp {
			it.bytes = int64(len(it.data))
		} else {
			it.bytes = int64(it.hdr.DType.Size())
			for _, d := range it.hdr.Shape {
				it.bytes *= int64(d)
			}
		}
	}
	sort.SliceStable(p.items, func(i, j int) bool { return p.items[i].hdr.Name < p.items[j].hdr.Name })
	return nil
}

// writeShards writes the output tensors into the planned files, one tensor at a time.
func (p *plan) writeShards(ctx context.Context, dir string, hs []safetensors.Header, shards []safetensors.Shard, bar *progress.Bar) error {
	err := safetensors.WriteShards(dir, hs, shards, func(i int, w io.Writer) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		it := p.items[i]
		if err := p.produce(it, w); err != nil {
			return err
		}
		if bar != nil {
			bar.Add(it.bytes)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	return nil
}

// produce writes one output tensor.
func (p *plan) produce(it *item, w io.Writer) error {
	switch it.kind {
	case kCopy:
		return p.copyRaw(it.src, w)
	case kPrecomp:
		_, err := w.Write(it.data)
		return err
	case kReplace:
		if it.saved.DType == it.hdr.DType {
			_, err := w.Write(it.saved.Data)
			return err
		}
		v := make([]float32, len(it.saved.Data)/it.saved.DType.Size())
		if err := safetensors.Decode(it.saved.DType, it.saved.Data, v); err != nil {
			return err
		}
		return encodeTo(w, it.hdr.DType, v)
	}
	if it.kind == kConvert {
		return p.convertStream(it.src, it.hdr.DType, w)
	}
	var W []float32
	var err error
	if it.saved != nil { // a PEFT base layer the deltas go on top of
		W = make([]float32, len(it.saved.Data)/it.saved.DType.Size())
		err = safetensors.Decode(it.saved.DType, it.saved.Data, W)
	} else if q := p.quant[it.src]; q != nil {
		W, err = p.dequantize(it.src, q)
	} else {
		W, err = p.readF32(it.src)
	}
	if err != nil {
		return err
	}
	if it.kind == kMerge {
		if err := addDeltas(p.pool, it.src, W, it.deltas); err != nil {
			return err
		}
	}
	return encodeTo(w, it.hdr.DType, W)
}

// addDeltas adds Σ wᵢ·sᵢ·Bᵢ·Aᵢ to the [out, in] weight W in f32 and checks the result is finite.
func addDeltas(pool *kernels.Pool, name string, W []float32, ds []delta) error {
	cols := 0
	for _, d := range ds {
		pr := d.pair
		if pr == nil {
			continue // trained token rows: copied in below, after every pair
		}
		cols = pr.In
		if d.embed {
			cols = pr.Out
		}
		if len(W) != pr.Out*pr.In {
			return fmt.Errorf("tensor %q has %d elements, adapter delta is [%d %d]", name, len(W), pr.Out, pr.In)
		}
		if d.embed {
			pr.AddDeltaT(pool, W, d.weight) // table [vocab=In, dim=Out] += (wᵢ·sᵢ)·(B·A)ᵀ
			continue
		}
		if pr.Magnitude != nil {
			pr.MergeDoRA(pool, W) // W = (m/‖W + s·B·A‖)⊙(W + s·B·A), PEFT's DoRA merge (checkDoRA: weight 1)
			continue
		}
		pr.AddDelta(pool, W, d.weight) // W += (wᵢ·sᵢ)·B·A
	}
	for _, d := range tokenDeltas(ds) {
		if err := d.tokens.CopyInto(W); err != nil {
			return fmt.Errorf("tensor %q: %w", name, err)
		}
		cols = d.tokens.Dim
	}
	for i, v := range W {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("tensor %q: merged weight [%d, %d] is %v (NaN/Inf in the adapter or overflow)", name, i/cols, i%cols, v)
		}
	}
	return nil
}

// encodeTo rounds v once to dt and writes it in chunks (no second full-size buffer).
func encodeTo(w io.Writer, dt safetensors.DType, v []float32) error {
	const chunk = 1 << 16
	for i := 0; i < len(v); i += chunk {
		b, err := safetensors.Encode(dt, v[i:min(i+chunk, len(v))])
		if err != nil {
			return err
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// copyExtras copies the non-weight files of the base folder (config, generation config, tokenizer, chat template,
// README, ...). Weight files are written by the merge; config.json is written by writeConfig.
func copyExtras(base, dst string) error {
	ents, err := os.ReadDir(base)
	if err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	for _, e := range ents {
		n := e.Name()
		if !e.Type().IsRegular() || strings.HasPrefix(n, ".") || n == "config.json" || n == safetensors.IndexName ||
			strings.HasSuffix(n, ".safetensors") || strings.HasSuffix(n, ".bin") || strings.HasSuffix(n, ".pt") ||
			strings.HasSuffix(n, ".pth") || strings.HasSuffix(n, ".gguf") || strings.HasSuffix(n, ".bin.index.json") ||
			n == "lorakit_merge.json" {
			continue
		}
		if err := copyFile(filepath.Join(base, n), filepath.Join(dst, n)); err != nil {
			return fmt.Errorf("merge: copy %s: %w", n, err)
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// editConfig updates config.json for the output: torch_dtype when the dtype changes, quantization_config
// removed when 4-bit weights are written dequantised.
func (p *plan) editConfig(opt Options) error {
	if len(p.quant) > 0 && opt.Requantize == "" {
		if _, ok := p.config["quantization_config"]; ok {
			delete(p.config, "quantization_config")
			p.cfgDirty = true
		}
	}
	dt := p.outDT
	if dt == "" && len(p.quant) > 0 && opt.Requantize == "" {
		dt = safetensors.BF16
	}
	if dt != "" {
		name := map[safetensors.DType]string{safetensors.F32: "float32", safetensors.BF16: "bfloat16", safetensors.F16: "float16"}[dt]
		v, _ := json.Marshal(name)
		set := false
		for _, k := range []string{"torch_dtype", "dtype"} {
			if _, ok := p.config[k]; ok {
				p.config[k] = v
				set = true
			}
		}
		if !set {
			p.config["torch_dtype"] = v
		}
		p.cfgDirty = true
	}
	return nil
}

func (p *plan) writeConfig(dir string, orig []byte) error {
	b := orig
	if p.cfgDirty {
		var err error
		if b, err = json.MarshalIndent(p.config, "", "  "); err != nil {
			return fmt.Errorf("merge: config.json: %w", err)
		}
		b = append(b, '\n')
	}
	return atomicfile.WriteBytes(filepath.Join(dir, "config.json"), b)
}

// writeProvenance saves the resolved merge settings beside the weights.
func writeProvenance(dir string, res *Result, opt Options) error {
	m := map[string]any{"tool": "lorakit merge", "base": res.Base, "adapters": res.Adapters, "dtype": res.DType,
		"formula": "W + sum_i weight_i * scaling_i * B_i @ A_i, in float32, rounded once"}
	if opt.Requantize != "" {
		m["requantize"] = opt.Requantize
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteBytes(filepath.Join(dir, "lorakit_merge.json"), append(b, '\n'))
}
