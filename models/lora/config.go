// Package lora holds LoRA adapters as PEFT writes them: the adapter_config.json, the adapter_model.safetensors
// tensors, the per-module scaling, and the one place where the LoRA math lives: y += s·B·(A·x) in every storage
// layout (Factors.Apply; Shrink and Expand for training) and the merged delta s·B·A (AddDelta, DeltaWeight).
//
// A module is named as PEFT sees it inside the base model, e.g. "model.layers.3.self_attn.q_proj"; its tensors
// are saved as "base_model.model.<module>.lora_A.weight" [r, in] and "...lora_B.weight" [out, r], and its
// contribution to a linear layer is y += s·B·(A·x) with s = α/r (α/√r with use_rslora).
package lora

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/dlclark/regexp2/v2"
)

// Config is adapter_config.json. Fields PEFT writes that lorakit does not interpret are kept in Extra and
// written back unchanged, so a load → save round trip keeps them.
type Config struct {
	PeftType  string // "LORA" (anything else is rejected by Load)
	TaskType  string // "CAUSAL_LM"
	BaseModel string // base_model_name_or_path (provenance only)
	R         int
	Alpha     float64
	Dropout   float64
	// TargetModules is the list form (exact module name or "."+suffix match). TargetRegex is the string form:
	// a regex that must match the whole module name, or "all-linear". At most one of the two is set.
	TargetModules []string
	TargetRegex   string
	// ExcludeModules uses the same rules as TargetModules (list) / ExcludeRegex (string).
	ExcludeModules []string
	ExcludeRegex   string
	// LayersToTransform restricts targeting to these layer indices (PEFT layers_to_transform); LayersPattern
	// names the layer list ("layers"); empty means PEFT's defaults.
	LayersToTransform []int
	LayersPattern     []string
	UseRSLoRA         bool
	// RankPattern and AlphaPattern map a regex/name to r or α; the first key (in PatternOrder order, else
	// sorted order) matching `(.*\.)?(KEY)$` against the module name wins, as in PEFT.
	RankPattern, AlphaPattern map[string]float64
	RankOrder, AlphaOrder     []string // key order as found in the file (PEFT iterates the dict in file order)
	ModulesToSave             []string
	Bias                      string // "none" | "all" | "lora_only"
	UseDoRA                   bool
	LoraBias                  bool
	FanInFanOut               bool
	InitLoraWeights           json.RawMessage // kept as written (true / "gaussian" / ...)
	Revision                  string
	// TrainableTokens is trainable_token_indices (nil when absent or null): rows of the embedding (and LM head)
	// trained and saved whole beside the LoRA pairs (see tokens.go).
	TrainableTokens *TokenIndices
	Extra           map[string]json.RawMessage // unknown keys, written back as found
}

// DefaultTargets are the seven Llama projections lorakit targets by default.
var DefaultTargets = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

// NewConfig returns a config with PEFT's defaults for a causal-LM LoRA of rank r and alpha α.
func NewConfig(r int, alpha float64, targets []string) Config {
	return Config{PeftType: "LORA", TaskType: "CAUSAL_LM", R: r, Alpha: alpha, TargetModules: append([]string(nil), targets...),
		Bias: "none", InitLoraWeights: json.RawMessage("true")}
}

// known lists the keys Config interprets; every other key goes to Extra.
var known = map[string]bool{
	"peft_type": true, "task_type": true, "base_model_name_or_path": true, "r": true, "lora_alpha": true,
	"lora_dropout": true, "target_modules": true, "exclude_modules": true, "layers_to_transform": true,
	"layers_pattern": true, "use_rslora": true, "rank_pattern": true, "alpha_pattern": true, "modules_to_save": true,
	"bias": true, "use_dora": true, "lora_bias": true, "fan_in_fan_out": true, "init_lora_weights": true, "revision": true,
}

// ParseConfig parses adapter_config.json. Unknown keys are kept (PEFT tolerates them too); a known key with a
// wrong type is an error naming it. Semantic checks (peft_type, lora_bias, ...) are in Validate.
//
// complexity: one check per config key, each naming the key it rejects; split, the list would be scattered.
func ParseConfig(data []byte) (*Config, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("adapter_config.json: %w", err)
	}
	c := &Config{R: 8, Alpha: 8, Bias: "none"} // PEFT's LoraConfig defaults
	for k, v := range raw {
		if k == "trainable_token_indices" && !isNull(v) {
			ti, err := parseTokenIndices(v)
			if err != nil {
				return nil, fmt.Errorf("adapter_config.json: field %q: %w", k, err)
			}
			c.TrainableTokens = ti
			continue
		}
		if !known[k] {
			if c.Extra == nil {
				c.Extra = map[string]json.RawMessage{}
			}
			c.Extra[k] = v
			continue
		}
		if isNull(v) {
			continue
		}
		var err error
		switch k {
		case "peft_type":
			err = json.Unmarshal(v, &c.PeftType)
		case "task_type":
			err = json.Unmarshal(v, &c.TaskType)
		case "base_model_name_or_path":
			err = json.Unmarshal(v, &c.BaseModel)
		case "revision":
			err = json.Unmarshal(v, &c.Revision)
		case "r":
			var f float64
			if err = json.Unmarshal(v, &f); err == nil {
				if f != math.Trunc(f) {
					err = fmt.Errorf("not an integer: %v", f)
				}
				c.R = int(f)
			}
		case "lora_alpha":
			err = json.Unmarshal(v, &c.Alpha)
		case "lora_dropout":
			err = json.Unmarshal(v, &c.Dropout)
		case "target_modules":
			c.TargetModules, c.TargetRegex, err = listOrString(v)
		case "exclude_modules":
			c.ExcludeModules, c.ExcludeRegex, err = listOrString(v)
		case "layers_to_transform":
			var one int
			if json.Unmarshal(v, &one) == nil {
				c.LayersToTransform = []int{one}
			} else {
				err = json.Unmarshal(v, &c.LayersToTransform)
			}
		case "layers_pattern":
			var s string
			c.LayersPattern, s, err = listOrString(v)
			if s != "" {
				c.LayersPattern = []string{s}
			}
		case "use_rslora":
			err = json.Unmarshal(v, &c.UseRSLoRA)
		case "use_dora":
			err = json.Unmarshal(v, &c.UseDoRA)
		case "lora_bias":
			err = json.Unmarshal(v, &c.LoraBias)
		case "fan_in_fan_out":
			err = json.Unmarshal(v, &c.FanInFanOut)
		case "bias":
			err = json.Unmarshal(v, &c.Bias)
		case "init_lora_weights":
			c.InitLoraWeights = append(json.RawMessage(nil), v...)
		case "modules_to_save":
			err = json.Unmarshal(v, &c.ModulesToSave)
		case "rank_pattern":
			c.RankPattern, c.RankOrder, err = orderedNumbers(v)
		case "alpha_pattern":
			c.AlphaPattern, c.AlphaOrder, err = orderedNumbers(v)
		}
		if err != nil {
			return nil, fmt.Errorf("adapter_config.json: field %q: %w", k, err)
		}
	}
	return c, nil
}

func isNull(v json.RawMessage) bool { return string(bytes.TrimSpace(v)) == "null" }

// listOrString decodes PEFT's Optional[Union[list[str], str]].
func listOrString(v json.RawMessage) ([]string, string, error) {
	var s string
	if json.Unmarshal(v, &s) == nil {
		return nil, s, nil
	}
	var l []string
	if err := json.Unmarshal(v, &l); err != nil {
		return nil, "", fmt.Errorf("want a list of strings or a string: %w", err)
	}
	return l, "", nil
}

// orderedNumbers decodes a JSON object of numbers keeping the key order.
func orderedNumbers(v json.RawMessage) (map[string]float64, []string, error) {
	dec := json.NewDecoder(bytes.NewReader(v))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, nil, fmt.Errorf("want an object of numbers")
	}
	m := map[string]float64{}
	var order []string
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, nil, err
		}
		k, _ := t.(string)
		var f float64
		if err := dec.Decode(&f); err != nil {
			return nil, nil, fmt.Errorf("key %q: %w", k, err)
		}
		if _, dup := m[k]; !dup {
			order = append(order, k)
		}
		m[k] = f
	}
	return m, order, nil
}

// Validate rejects what lorakit cannot apply correctly: a non-LoRA peft_type, a bias on lora_B,
// GPT-2 style fan_in_fan_out weights, r ≤ 0, and rank/alpha pattern regexes that do not compile.
func (c *Config) Validate() error {
	switch {
	case c.PeftType == "":
		return fmt.Errorf("adapter_config.json: missing \"peft_type\" (want \"LORA\")")
	case !strings.EqualFold(c.PeftType, "LORA"):
		return fmt.Errorf("adapter_config.json: peft_type %q is not supported (only \"LORA\")", c.PeftType)
	case c.LoraBias:
		return fmt.Errorf("adapter_config.json: lora_bias is true: a bias on lora_B is not supported")
	case c.FanInFanOut:
		return fmt.Errorf("adapter_config.json: fan_in_fan_out is true: only nn.Linear [out, in] weights are supported")
	case c.R <= 0:
		return fmt.Errorf("adapter_config.json: r = %d, want > 0", c.R)
	}
	for _, p := range []struct {
		field string
		m     map[string]float64
		int   bool
	}{{"rank_pattern", c.RankPattern, true}, {"alpha_pattern", c.AlphaPattern, false}} {
		for k, v := range p.m {
			if _, err := patternRegex(k); err != nil {
				return fmt.Errorf("adapter_config.json: %s key %q: %w", p.field, k, err)
			}
			if p.int && (v <= 0 || v != math.Trunc(v)) {
				return fmt.Errorf("adapter_config.json: rank_pattern[%q] = %v, want a positive integer", k, v)
			}
		}
	}
	return nil
}

// CheckTargets reports a target_modules/exclude_modules regex that does not compile. Load does not need it
// (the saved tensors say which modules are adapted); a trainer choosing modules does.
func (c *Config) CheckTargets() error {
	for _, re := range []string{c.TargetRegex, c.ExcludeRegex} {
		if re != "" && re != "all-linear" {
			if _, err := fullRegex(re); err != nil {
				return fmt.Errorf("target/exclude regex %q: %w", re, err)
			}
		}
	}
	return nil
}

func patternRegex(key string) (*regexp2.Regexp, error) {
	return regexp2.Compile(`^(.*\.)?(` + key + `)$`)
}

func fullRegex(re string) (*regexp2.Regexp, error) { return regexp2.Compile(`^(?:` + re + `)$`) }

func match(re *regexp2.Regexp, err error, s string) bool {
	if err != nil {
		return false
	}
	ok, err := re.MatchString(s)
	return err == nil && ok
}

// patternKey is PEFT's get_pattern_key: the first key (dict order) with re.match(rf"(.*\.)?({key})$", module).
func patternKey(m map[string]float64, order []string, module string) (string, bool) {
	if len(m) == 0 {
		return "", false
	}
	keys := order
	if len(keys) != len(m) {
		keys = make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys) // PEFT saves with sort_keys=True, so this is the order of a PEFT-written file
	}
	for _, k := range keys {
		re, err := patternRegex(k)
		if match(re, err, module) {
			return k, true
		}
	}
	if _, ok := m[module]; ok {
		return module, true
	}
	return "", false
}

// RankFor is the rank of module: rank_pattern first, else r.
func (c *Config) RankFor(module string) int {
	if k, ok := patternKey(c.RankPattern, c.RankOrder, module); ok {
		return int(c.RankPattern[k])
	}
	return c.R
}

// AlphaFor is α of module: alpha_pattern first, else lora_alpha.
func (c *Config) AlphaFor(module string) float64 {
	if k, ok := patternKey(c.AlphaPattern, c.AlphaOrder, module); ok {
		return c.AlphaPattern[k]
	}
	return c.Alpha
}

// ScaleFor is the scaling of module, computed as PEFT does (in float64, then used in f32):
// α/r, or α/√r with use_rslora.
func (c *Config) ScaleFor(module string) float32 {
	return Scaling(c.AlphaFor(module), c.RankFor(module), c.UseRSLoRA)
}

// Scaling is α/r, or α/√r when rslora is set.
func Scaling(alpha float64, r int, rslora bool) float32 {
	if rslora {
		return float32(alpha / math.Sqrt(float64(r)))
	}
	return float32(alpha / float64(r))
}

// linearSuffixes are the Linear layers of the Llama family (the output layer lm_head is never "all-linear").
var linearSuffixes = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

var defaultLayerRe = regexp.MustCompile(`^.*\.[^.]*\.(\d+)\.`)

// Targets reports whether PEFT would wrap the Linear module with LoRA under this config
// (check_target_module_exists: exclusions first, string → full regex match, list → exact or "."+suffix,
// then layers_to_transform).
func (c *Config) Targets(module string) bool {
	if c.ExcludeRegex != "" {
		if re, err := fullRegex(c.ExcludeRegex); match(re, err, module) {
			return false
		}
	}
	if listMatch(c.ExcludeModules, module) {
		return false
	}
	switch {
	case c.TargetRegex == "all-linear":
		if !listMatch(linearSuffixes, module) {
			return false
		}
	case c.TargetRegex != "":
		re, err := fullRegex(c.TargetRegex)
		return match(re, err, module) // PEFT applies layers_to_transform only to the list form
	case len(c.TargetModules) == 0:
		return false
	default:
		if !listMatch(c.TargetModules, module) {
			return false
		}
	}
	if len(c.LayersToTransform) == 0 {
		return true
	}
	idx, ok := layerIndex(module, c.LayersPattern)
	if !ok {
		return false
	}
	for _, l := range c.LayersToTransform {
		if l == idx {
			return true
		}
	}
	return false
}

func listMatch(list []string, module string) bool {
	for _, t := range list {
		if module == t || strings.HasSuffix(module, "."+t) {
			return true
		}
	}
	return false
}

// layerIndex is PEFT's layer-index lookup: re.match(r".*\.[^.]*\.(\d+)\.", key) without layers_pattern,
// else r".*\.{pattern}\.(\d+)\." for each pattern.
func layerIndex(module string, patterns []string) (int, bool) {
	res := []*regexp.Regexp{defaultLayerRe}
	if len(patterns) > 0 {
		res = res[:0]
		for _, p := range patterns {
			re, err := regexp.Compile(`^.*\.` + p + `\.(\d+)\.`)
			if err != nil {
				continue
			}
			res = append(res, re)
		}
	}
	for _, re := range res {
		if m := re.FindStringSubmatch(module); m != nil {
			n, err := strconv.Atoi(m[1])
			return n, err == nil
		}
	}
	return 0, false
}

// SavesModule reports whether a full tensor of module is saved by modules_to_save (PEFT: the module name ends
// with one of the entries).
func (c *Config) SavesModule(module string) bool {
	for _, m := range c.ModulesToSave {
		if module == m || strings.HasSuffix(module, "."+m) {
			return true
		}
	}
	return false
}

// MarshalJSON writes the config the way PEFT does: json.dumps(asdict(config), indent=2, sort_keys=True), with
// the canonical set of LoRA fields plus any unknown keys that were read.
func (c *Config) MarshalJSON() ([]byte, error) {
	m := map[string]any{}
	for k, v := range c.Extra {
		m[k] = v
	}
	orNil := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	patterns := func(p map[string]float64, isInt bool) map[string]any {
		out := map[string]any{}
		for k, v := range p {
			if isInt {
				out[k] = int(v)
			} else {
				out[k] = intIfIntegral(v)
			}
		}
		return out
	}
	m["alpha_pattern"] = patterns(c.AlphaPattern, false)
	m["rank_pattern"] = patterns(c.RankPattern, true)
	if _, ok := m["auto_mapping"]; !ok {
		m["auto_mapping"] = nil
	}
	m["base_model_name_or_path"] = orNil(c.BaseModel)
	bias := c.Bias
	if bias == "" {
		bias = "none"
	}
	m["bias"] = bias
	m["fan_in_fan_out"] = c.FanInFanOut
	m["inference_mode"] = true
	if len(c.InitLoraWeights) > 0 {
		m["init_lora_weights"] = c.InitLoraWeights
	} else {
		m["init_lora_weights"] = true
	}
	for k, v := range map[string]any{"layer_replication": nil, "loftq_config": map[string]any{}, "megatron_config": nil,
		"megatron_core": "megatron.core"} {
		if _, ok := m[k]; !ok {
			m[k] = v
		}
	}
	if len(c.LayersToTransform) > 0 {
		m["layers_to_transform"] = c.LayersToTransform
	} else {
		m["layers_to_transform"] = nil
	}
	switch len(c.LayersPattern) {
	case 0:
		m["layers_pattern"] = nil
	case 1:
		m["layers_pattern"] = c.LayersPattern[0]
	default:
		m["layers_pattern"] = c.LayersPattern
	}
	m["lora_alpha"] = intIfIntegral(c.Alpha) // LoraConfig.lora_alpha is an int in PEFT
	m["lora_dropout"] = jsonNumber(c.Dropout)
	if c.ModulesToSave != nil {
		m["modules_to_save"] = c.ModulesToSave
	} else {
		m["modules_to_save"] = nil
	}
	pt := c.PeftType
	if pt == "" {
		pt = "LORA"
	}
	m["peft_type"] = pt
	m["r"] = c.R
	m["revision"] = orNil(c.Revision)
	switch {
	case c.TargetRegex != "":
		m["target_modules"] = c.TargetRegex
	case c.TargetModules != nil:
		t := append([]string(nil), c.TargetModules...)
		sort.Strings(t) // PEFT stores a set and json.dumps writes it as a list
		m["target_modules"] = t
	default:
		m["target_modules"] = nil
	}
	switch {
	case c.ExcludeRegex != "":
		m["exclude_modules"] = c.ExcludeRegex
	case c.ExcludeModules != nil:
		m["exclude_modules"] = c.ExcludeModules
	}
	m["task_type"] = orNil(c.TaskType)
	m["use_dora"] = c.UseDoRA
	m["use_rslora"] = c.UseRSLoRA
	if c.LoraBias {
		m["lora_bias"] = true
	}
	if c.TrainableTokens != nil {
		m["trainable_token_indices"] = c.TrainableTokens.marshal()
	}
	return marshalSorted(m)
}

// intIfIntegral keeps integral values as JSON integers (PEFT's int fields), others as floats.
func intIfIntegral(v float64) any {
	if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
		return int64(v)
	}
	return v
}

// jsonNumber writes integral floats as Python would print a float (32.0) so the file reads like PEFT's.
type jsonNumber float64

func (f jsonNumber) MarshalJSON() ([]byte, error) {
	v := float64(f)
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return []byte(strconv.FormatFloat(v, 'f', 1, 64)), nil
	}
	return json.Marshal(v)
}

// marshalSorted is json.dumps(indent=2, sort_keys=True) for a top-level object (Go's encoder sorts map keys).
func marshalSorted(m map[string]any) ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("adapter_config.json: %w", err)
	}
	return b, nil
}
