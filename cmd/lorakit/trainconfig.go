package main

// `lorakit train --config FILE.yaml` and the flag names other trainers use.
//
// A config is nested YAML in the shape of lorakit's own flags (`max_steps: 2`), TRL's SFTConfig/ModelConfig
// (`learning_rate`, `per_device_train_batch_size`, `use_peft`, `lora_r`), axolotl's (`base_model`,
// `datasets: [{path}]`, `micro_batch_size`, `sequence_len`, `adapter: qlora`) or mlx-lm's
// (`iters`, `adapter_path`, `lora_parameters: {rank, scale, dropout, keys}`). Each key we support sets the
// flag it means unless that flag is on the command line; keys we do not support are named in one warning
// (a config written for another tool has many); a key one letter away from one of ours is an error (a typo
// would otherwise drop a setting), and so is a value of the wrong type, naming the key and its line.

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// trainAliases maps flag names of TRL (transformers' TrainingArguments, SFTConfig, ModelConfig), axolotl
// and mlx-lm to the train flag that means the same thing. They are accepted on the command line (hidden)
// and as config keys.
var trainAliases = map[string]string{
	"learning-rate":               "lr",
	"lora-r":                      "rank",
	"lora-alpha":                  "alpha",
	"lora-dropout":                "dropout",
	"lora-target-modules":         "target-modules",
	"peft-use-rslora":             "use-rslora",
	"peft-use-dora":               "use-dora",
	"output-dir":                  "out",
	"adapter-path":                "out", // mlx-lm: where the adapter is saved
	"model-name-or-path":          "model",
	"base-model":                  "model",
	"iters":                       "max-steps", // mlx-lm: iterations are optimizer steps
	"num-train-epochs":            "epochs",
	"num-epochs":                  "epochs",
	"per-device-train-batch-size": "batch-size",
	"micro-batch-size":            "batch-size",
	"gradient-accumulation-steps": "grad-accum",
	"max-seq-length":              "max-seq-len",
	"max-length":                  "max-seq-len",
	"sequence-len":                "max-seq-len",
	"lr-scheduler-type":           "lr-scheduler",
	"adam-beta1":                  "beta1",
	"adam-beta2":                  "beta2",
	"adam-epsilon":                "eps",
	"save-steps":                  "save-every",
	"eval-steps":                  "eval-every",
	"steps-per-eval":              "eval-every",
	"sample-packing":              "packing",
	"train-on-inputs":             "train-on-prompt",
	"fine-tune-type":              "method",
	"lora-model-dir":              "init-adapter",
	"val-set-size":                "eval-fraction",
}

// normalizeTrainFlag is the train command's pflag normalizer: '_' reads as '-' (TRL's parser takes
// both) and an alias reads as its flag.
func normalizeTrainFlag(_ *pflag.FlagSet, name string) pflag.NormalizedName {
	name = strings.ReplaceAll(name, "_", "-")
	if to, ok := trainAliases[name]; ok {
		name = to
	}
	return pflag.NormalizedName(name)
}

// aliasesOf lists the aliases of each flag, for its help text.
func aliasesOf() map[string][]string {
	out := map[string][]string{}
	for a, f := range trainAliases {
		if a != f {
			out[f] = append(out[f], "--"+a)
		}
	}
	for _, v := range out {
		sort.Strings(v)
	}
	return out
}

// noteAliases appends "(also --x, --y)" to the usage of every flag that has aliases.
func noteAliases(fs *pflag.FlagSet) {
	al := aliasesOf()
	fs.VisitAll(func(f *pflag.Flag) {
		if a := al[f.Name]; len(a) > 0 {
			f.Usage += " (also " + strings.Join(a, ", ") + ")"
		}
	})
}

// configSetting is one flag value read from a config file.
type configSetting struct {
	flag, value, key string
	line             int
}

// trainConfig collects what a config file sets.
type trainConfig struct {
	path    string
	fs      *pflag.FlagSet
	sets    []configSetting
	byFlag  map[string]configSetting
	unknown []string
	method  methodHints
	scale   *configSetting // mlx-lm lora_parameters.scale, turned into alpha once the rank is known
	// targetLinear is axolotl's lora_target_linear: true
	targetLinear *configSetting
}

// methodHints are the keys other tools spread the training method over.
type methodHints struct {
	adapter, peft, fourBit *configSetting
}

// applyTrainConfig reads path and sets every flag it names that the command line did not; warnings about
// keys we ignore go to w.
func applyTrainConfig(fs *pflag.FlagSet, path string, w io.Writer) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	tc := &trainConfig{path: path, fs: fs, byFlag: map[string]configSetting{}}
	if len(doc.Content) == 0 {
		return nil // an empty file
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("%s:%d: want a mapping of keys to values", path, root.Line)
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if err := tc.entry(strings.ReplaceAll(k.Value, "-", "_"), k.Line, v); err != nil {
			return err
		}
	}
	if err := tc.finish(); err != nil {
		return err
	}
	if len(tc.unknown) > 0 {
		fmt.Fprintf(w, "config %s: ignoring keys lorakit train does not support: %s\n", path, strings.Join(tc.unknown, ", "))
	}
	for _, s := range tc.sets {
		fl := fs.Lookup(s.flag)
		if fl.Changed {
			continue // the command line wins
		}
		if err := fs.Set(fl.Name, s.value); err != nil {
			return fmt.Errorf("%s:%d: key %s: %w", path, s.line, s.key, err)
		}
	}
	return nil
}

// entry handles one top-level key.
func (tc *trainConfig) entry(key string, line int, v *yaml.Node) error {
	if isNullNode(v) {
		return nil // `key:` or `key: null` sets nothing, as in every one of these tools
	}
	full := key
	switch key {
	case "config", "json":
		return tc.unknownKey(full, line)
	case "lora_parameters":
		return tc.loraParameters(v)
	case "datasets", "test_datasets":
		return tc.datasets(full, v)
	case "adapter":
		if v.Kind == yaml.ScalarNode && v.Value != "lora" && v.Value != "qlora" {
			return fmt.Errorf("%s:%d: key adapter: %q is not lora or qlora", tc.path, v.Line, v.Value)
		}
		tc.method.adapter = &configSetting{flag: "method", value: v.Value, key: full, line: v.Line}
		return nil
	case "use_peft":
		tc.method.peft = &configSetting{flag: "method", value: v.Value, key: full, line: v.Line}
		return nil
	case "load_in_4bit":
		tc.method.fourBit = &configSetting{flag: "method", value: v.Value, key: full, line: v.Line}
		return nil
	case "lora_target_linear":
		// axolotl adds every linear layer to lora_target_modules: all-linear covers both
		if v.Value == "true" {
			tc.targetLinear = &configSetting{flag: "target-modules", value: "all-linear", key: full, line: v.Line}
		}
		return nil
	case "mask_prompt", "completion_only_loss", "assistant_only_loss":
		// true: loss on the answer only (lorakit's default); false trains on the prompt too, except for
		// assistant_only_loss, whose false leaves the choice to completion_only_loss
		inv, err := strconv.ParseBool(v.Value)
		if err != nil || v.Kind != yaml.ScalarNode {
			return fmt.Errorf("%s:%d: key %s: want true or false, got %q", tc.path, v.Line, full, v.Value)
		}
		if full == "assistant_only_loss" && !inv {
			return nil
		}
		return tc.set("train-on-prompt", strconv.FormatBool(!inv), full, v.Line)
	case "max_steps":
		if v.Value == "-1" {
			return nil // TrainingArguments' "not set"
		}
	}
	flag := string(normalizeTrainFlag(nil, key))
	if tc.fs.Lookup(flag) == nil {
		return tc.unknownKey(full, line)
	}
	val, err := tc.value(flag, full, v)
	if err != nil {
		return err
	}
	return tc.set(flag, val, full, v.Line)
}

// value turns a node into the flag's string form: a scalar, or a list for a list flag.
func (tc *trainConfig) value(flag, key string, v *yaml.Node) (string, error) {
	fl := tc.fs.Lookup(flag)
	switch v.Kind {
	case yaml.ScalarNode:
		s := v.Value
		if t := fl.Value.Type(); (t == "int" || t == "int64") && strings.ContainsAny(s, ".eE") {
			// TRL writes num_train_epochs: 3.0; a whole number is fine, a fraction is not
			if f, err := strconv.ParseFloat(s, 64); err == nil && f == math.Trunc(f) && math.Abs(f) < 1<<53 {
				s = strconv.FormatInt(int64(f), 10)
			}
		}
		return s, nil
	case yaml.SequenceNode:
		if fl.Value.Type() != "stringSlice" {
			return "", fmt.Errorf("%s:%d: key %s: want one value, got a list", tc.path, v.Line, key)
		}
		var items []string
		for _, it := range v.Content {
			if it.Kind != yaml.ScalarNode {
				return "", fmt.Errorf("%s:%d: key %s: want a list of names", tc.path, it.Line, key)
			}
			items = append(items, it.Value)
		}
		return strings.Join(items, ","), nil
	}
	return "", fmt.Errorf("%s:%d: key %s: want a value, got a mapping", tc.path, v.Line, key)
}

// set records one flag value; two keys that set the same flag are an error naming both.
func (tc *trainConfig) set(flag, value, key string, line int) error {
	if prev, ok := tc.byFlag[flag]; ok {
		return fmt.Errorf("%s:%d: key %s sets --%s, already set by %s on line %d: give one", tc.path, line, key, flag, prev.key, prev.line)
	}
	s := configSetting{flag: flag, value: value, key: key, line: line}
	tc.byFlag[flag] = s
	tc.sets = append(tc.sets, s)
	return nil
}

// drop forgets what the config set for flag.
func (tc *trainConfig) drop(flag string) {
	delete(tc.byFlag, flag)
	kept := tc.sets[:0]
	for _, s := range tc.sets {
		if s.flag != flag {
			kept = append(kept, s)
		}
	}
	tc.sets = kept
}

// unknownKey warns about a key, or fails when it looks like a misspelt key of ours.
func (tc *trainConfig) unknownKey(key string, line int) error {
	if near := tc.nearestKey(key); near != "" {
		return fmt.Errorf("%s:%d: unknown key %s (did you mean %s, the flag --%s?)", tc.path, line, key, near, normalizeTrainFlag(nil, near))
	}
	tc.unknown = append(tc.unknown, fmt.Sprintf("%s (line %d)", key, line))
	return nil
}

// nearestKey is a supported key one edit away from key, or "".
func (tc *trainConfig) nearestKey(key string) string {
	var best string
	check := func(name string) {
		k := strings.ReplaceAll(name, "-", "_")
		if best == "" && k != key && levenshtein(k, key) == 1 {
			best = k
		}
	}
	tc.fs.VisitAll(func(f *pflag.Flag) {
		if f.Name != "config" && f.Name != "json" {
			check(f.Name)
		}
	})
	for a := range trainAliases {
		check(a)
	}
	return best
}

// loraParameters reads mlx-lm's lora_parameters: rank, scale (mlx-lm multiplies B·A by it directly, so
// alpha = scale·rank), alpha, dropout and keys (module paths such as self_attn.q_proj).
func (tc *trainConfig) loraParameters(v *yaml.Node) error {
	if v.Kind != yaml.MappingNode {
		return fmt.Errorf("%s:%d: key lora_parameters: want a mapping", tc.path, v.Line)
	}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		key := "lora_parameters." + k.Value
		if isNullNode(val) {
			continue
		}
		var err error
		switch k.Value {
		case "rank":
			err = tc.setScalar("rank", key, val)
		case "alpha":
			err = tc.setScalar("alpha", key, val)
		case "dropout":
			err = tc.setScalar("dropout", key, val)
		case "scale":
			if val.Kind != yaml.ScalarNode {
				return fmt.Errorf("%s:%d: key %s: want a number", tc.path, val.Line, key)
			}
			tc.scale = &configSetting{flag: "alpha", value: val.Value, key: key, line: val.Line}
		case "keys":
			err = tc.loraKeys(key, val)
		default:
			err = tc.unknownKey(key, k.Line)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (tc *trainConfig) setScalar(flag, key string, v *yaml.Node) error {
	val, err := tc.value(flag, key, v)
	if err != nil {
		return err
	}
	return tc.set(flag, val, key, v.Line)
}

// loraKeys turns mlx-lm's module paths (self_attn.q_proj, mlp.down_proj) into target module names.
func (tc *trainConfig) loraKeys(key string, v *yaml.Node) error {
	if v.Kind != yaml.SequenceNode {
		return fmt.Errorf("%s:%d: key %s: want a list of module paths", tc.path, v.Line, key)
	}
	var mods []string
	for _, it := range v.Content {
		if it.Kind != yaml.ScalarNode {
			return fmt.Errorf("%s:%d: key %s: want a list of module paths", tc.path, it.Line, key)
		}
		mods = append(mods, path.Ext("." + it.Value)[1:])
	}
	return tc.set("target-modules", strings.Join(mods, ","), key, v.Line)
}

// datasets reads axolotl's datasets / test_datasets: lorakit trains on one file, so one entry with a path.
func (tc *trainConfig) datasets(key string, v *yaml.Node) error {
	flag := "data"
	if key == "test_datasets" {
		flag = "eval-data"
	}
	if v.Kind != yaml.SequenceNode || len(v.Content) == 0 {
		return fmt.Errorf("%s:%d: key %s: want a list of {path: FILE}", tc.path, v.Line, key)
	}
	if len(v.Content) > 1 {
		return fmt.Errorf("%s:%d: key %s: %d datasets; lorakit trains on one JSONL file (concatenate them: cat a.jsonl b.jsonl > all.jsonl)", tc.path, v.Line, key, len(v.Content))
	}
	d := v.Content[0]
	if d.Kind != yaml.MappingNode {
		return fmt.Errorf("%s:%d: key %s[0]: want a mapping with a path", tc.path, d.Line, key)
	}
	var pathNode *yaml.Node
	for i := 0; i+1 < len(d.Content); i += 2 {
		switch k := d.Content[i]; k.Value {
		case "path":
			pathNode = d.Content[i+1]
		case "type", "split", "ds_type", "data_files":
			// the shape of each line is detected; one file is read
		default:
			if err := tc.unknownKey(key+"[0]."+k.Value, k.Line); err != nil {
				return err
			}
		}
	}
	if pathNode == nil || pathNode.Kind != yaml.ScalarNode {
		return fmt.Errorf("%s:%d: key %s[0]: missing path", tc.path, d.Line, key)
	}
	return tc.set(flag, pathNode.Value, key+"[0].path", pathNode.Line)
}

// finish resolves the keys that depend on each other: the method from axolotl's adapter, TRL's use_peft
// and load_in_4bit, and mlx-lm's scale from the rank.
func (tc *trainConfig) finish() error {
	if err := tc.resolveMethod(); err != nil {
		return err
	}
	if t := tc.targetLinear; t != nil {
		if _, ok := tc.byFlag["target-modules"]; ok {
			tc.drop("target-modules")
		}
		if err := tc.set(t.flag, t.value, t.key, t.line); err != nil {
			return err
		}
	}
	if tc.scale == nil {
		return nil
	}
	scale, err := strconv.ParseFloat(tc.scale.value, 64)
	if err != nil {
		return fmt.Errorf("%s:%d: key %s: %q is not a number", tc.path, tc.scale.line, tc.scale.key, tc.scale.value)
	}
	rank := tc.fs.Lookup("rank").Value.String() // the command line's, else the default
	if s, ok := tc.byFlag["rank"]; ok && !tc.fs.Changed("rank") {
		rank = s.value
	}
	r, err := strconv.Atoi(rank)
	if err != nil {
		return fmt.Errorf("%s: rank %q is not a whole number", tc.path, rank)
	}
	return tc.set("alpha", strconv.FormatFloat(scale*float64(r), 'g', -1, 64), tc.scale.key, tc.scale.line)
}

func (tc *trainConfig) resolveMethod() error {
	h := tc.method
	var method string
	var from *configSetting
	if h.adapter != nil {
		method, from = h.adapter.value, h.adapter
	}
	if h.peft != nil {
		on, err := strconv.ParseBool(h.peft.value)
		if err != nil {
			return fmt.Errorf("%s:%d: key use_peft: want true or false", tc.path, h.peft.line)
		}
		if method == "" {
			method, from = "full", h.peft
			if on {
				method = "lora"
			}
		}
	}
	if h.fourBit != nil {
		on, err := strconv.ParseBool(h.fourBit.value)
		if err != nil {
			return fmt.Errorf("%s:%d: key load_in_4bit: want true or false", tc.path, h.fourBit.line)
		}
		if on {
			if method == "full" {
				return errors.New(tc.path + ": load_in_4bit needs a LoRA adapter (QLoRA); full fine-tuning trains the weights themselves")
			}
			method, from = "qlora", h.fourBit
		}
	}
	if method == "" {
		return nil
	}
	return tc.set("method", method, from.key, from.line)
}

func isNullNode(v *yaml.Node) bool {
	return v.Kind == yaml.ScalarNode && (v.Tag == "!!null" || v.Value == "")
}

// trainDataDir resolves an mlx-lm data folder: --data DIR reads DIR/train.jsonl, and DIR/valid.jsonl is
// the eval data when it exists and no other held-out data is given.
func trainDataDir(data, evalData string, evalFraction float64) (string, string) {
	if st, err := os.Stat(data); err != nil || !st.IsDir() {
		return data, evalData
	}
	if evalData == "" && evalFraction == 0 {
		if st, err := os.Stat(filepath.Join(data, "valid.jsonl")); err == nil && st.Mode().IsRegular() {
			evalData = filepath.Join(data, "valid.jsonl")
		}
	}
	return filepath.Join(data, "train.jsonl"), evalData
}
