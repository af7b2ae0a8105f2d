package train

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/nlpodyssey/spago/mat"

	"github.com/lorakit/lorakit/internal/atomicfile"
	"github.com/lorakit/lorakit/models/safetensors"
)

// trainerState is checkpoint-N/trainer_state.json.
type trainerState struct {
	Step     int       `json:"step"`
	Examples int       `json:"examples"`
	PerStep  int       `json:"examples_per_step"`
	Seed     int64     `json:"seed"`
	Method   string    `json:"method"`
	History  []Metrics `json:"history"`
}

const (
	paramsFile    = "trainer_params.safetensors"
	optimizerFile = "optimizer.safetensors"
	stateFile     = "trainer_state.json"
)

func writeFileAtomic(path string, b []byte) error { return atomicfile.WriteBytes(path, b) }

// saveCheckpoint writes dir atomically: the trainable params (f32), the AdamW
// moments, the trainer state and, for LoRA, the PEFT adapter files.
func saveCheckpoint(dir string, net *Net, st trainerState) error {
	return atomicfile.Dir(dir, func(tmp string) error {
		var ps, os_ []safetensors.Tensor
		for i, p := range net.Params {
			shape := p.Shape()
			v := mat.Data[float32](p.Matrix)
			ps = append(ps, safetensors.F32Tensor(net.Names[i], shape, v))
			if s, ok := p.State.(*AdamState); ok {
				os_ = append(os_, safetensors.F32Tensor(net.Names[i]+".exp_avg", shape, s.M),
					safetensors.F32Tensor(net.Names[i]+".exp_avg_sq", shape, s.V))
			}
		}
		if err := safetensors.Write(filepath.Join(tmp, paramsFile), ps, nil); err != nil {
			return err
		}
		if err := safetensors.Write(filepath.Join(tmp, optimizerFile), os_, nil); err != nil {
			return err
		}
		if net.Method != Full {
			if err := net.Adapter().WriteFiles(tmp); err != nil {
				return err
			}
		}
		b, err := json.MarshalIndent(st, "", "  ")
		if err != nil {
			return err
		}
		return atomicfile.WriteBytes(filepath.Join(tmp, stateFile), b)
	})
}

// loadCheckpoint restores params and optimizer state into net.
func loadCheckpoint(dir string, net *Net) (*trainerState, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, fmt.Errorf("resume: %w", err)
	}
	var st trainerState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("resume: %s: %w", filepath.Join(dir, stateFile), err)
	}
	if st.Method != string(net.Method) {
		return nil, fmt.Errorf("resume: checkpoint %s was trained with --method %s, not %s", dir, st.Method, net.Method)
	}
	pf, err := safetensors.Open(filepath.Join(dir, paramsFile))
	if err != nil {
		return nil, fmt.Errorf("resume: %w", err)
	}
	defer pf.Close()
	of, err := safetensors.Open(filepath.Join(dir, optimizerFile))
	if err != nil {
		return nil, fmt.Errorf("resume: %w", err)
	}
	defer of.Close()
	for i, p := range net.Params {
		name := net.Names[i]
		w := mat.Data[float32](p.Matrix)
		v, err := pf.Float32s(name)
		if err != nil {
			return nil, fmt.Errorf("resume: %s: tensor %s: %w", paramsFile, name, err)
		}
		if len(v) != len(w) {
			return nil, fmt.Errorf("resume: %s: tensor %s has %d values, model wants %d", paramsFile, name, len(v), len(w))
		}
		copy(w, v)
		if _, ok := of.Info(name + ".exp_avg"); ok {
			m, err1 := of.Float32s(name + ".exp_avg")
			s, err2 := of.Float32s(name + ".exp_avg_sq")
			if err1 != nil || err2 != nil || len(m) != len(w) || len(s) != len(w) {
				return nil, fmt.Errorf("resume: %s: bad optimizer state for %s", optimizerFile, name)
			}
			p.State = &AdamState{M: m, V: s}
		}
	}
	return &st, nil
}

// findCheckpoint accepts a checkpoint folder or an output folder holding checkpoint-N folders (latest wins).
func findCheckpoint(dir string) (string, error) {
	if _, err := os.Stat(filepath.Join(dir, stateFile)); err == nil {
		return dir, nil
	}
	steps := listCheckpoints(dir)
	if len(steps) == 0 {
		return "", fmt.Errorf("resume: %s holds no %s and no checkpoint-N folder", dir, stateFile)
	}
	return filepath.Join(dir, fmt.Sprintf("checkpoint-%d", steps[len(steps)-1])), nil
}

func listCheckpoints(dir string) []int {
	ents, _ := os.ReadDir(dir)
	var steps []int
	for _, e := range ents {
		if n, ok := strings.CutPrefix(e.Name(), "checkpoint-"); ok && e.IsDir() {
			if s, err := strconv.Atoi(n); err == nil {
				if _, err := os.Stat(filepath.Join(dir, e.Name(), stateFile)); err == nil {
					steps = append(steps, s)
				}
			}
		}
	}
	sort.Ints(steps)
	return steps
}

// pruneCheckpoints keeps the newest keep checkpoints (0 keeps all).
func pruneCheckpoints(dir string, keep int) {
	if keep <= 0 {
		return
	}
	steps := listCheckpoints(dir)
	for len(steps) > keep {
		os.RemoveAll(filepath.Join(dir, fmt.Sprintf("checkpoint-%d", steps[0])))
		steps = steps[1:]
	}
}

// metricsLog is OUT/metrics.jsonl: rewritten atomically with the history at
// the start (a resumed run drops lines past its checkpoint), then one line
// appended per step.
type metricsLog struct{ f *os.File }

func openMetrics(out string, h []Metrics) (*metricsLog, error) {
	path := filepath.Join(out, "metrics.jsonl")
	err := atomicfile.Write(path, func(w *bufio.Writer) error {
		enc := json.NewEncoder(w)
		for _, m := range h {
			if err := enc.Encode(m); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, err
	}
	return &metricsLog{f: f}, nil
}

func (l *metricsLog) add(m Metrics) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if _, err := l.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("metrics.jsonl: %w", err)
	}
	return nil
}

func (l *metricsLog) close() { l.f.Close() }

// ResumeConfig reads the settings of the run that --resume dir continues: training_args.json of the output
// folder (dir itself, or the parent of a checkpoint-N folder).
func ResumeConfig(dir string) (Config, string, error) {
	var c Config
	path := filepath.Join(dir, "training_args.json")
	if !fileExists(path) {
		if p := filepath.Join(filepath.Dir(filepath.Clean(dir)), "training_args.json"); fileExists(p) {
			path = p
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return c, path, fmt.Errorf("resume: %s has no training_args.json (not a lorakit training output): %w", dir, err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, path, fmt.Errorf("resume: %s: %w", path, err)
	}
	return c, path, nil
}
