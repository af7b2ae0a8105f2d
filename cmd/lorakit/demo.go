package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/lorakit/lorakit/merge"
	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/testmodel"
	"github.com/lorakit/lorakit/quant"
	"github.com/lorakit/lorakit/serve"
	"github.com/lorakit/lorakit/serve/backend"
	"github.com/lorakit/lorakit/train"
)

func init() { register(newDemoCmd) }

// demoTask is one built-in synthetic SFT task of the demo.
type demoTask struct {
	Name     string
	Describe string
	Examples []map[string]string
	Ask      string // the prompt sent through the HTTP API at the end
}

// demoTasks are two synthetic tasks: the seed's own format ({"prompt","response"}, sums written in Chinese), and a
// reasoning_content variant (R1-style chain of thought before the answer).
func demoTasks() []demoTask {
	var sum, larger []map[string]string
	for a := 0; a < 10; a++ {
		for b := 0; b < 10; b++ {
			sum = append(sum, map[string]string{
				"prompt": fmt.Sprintf("请帮我计算%d+%d等于几。", a, b), "response": fmt.Sprint(a + b)})
			if a != b {
				hi, lo := max(a, b), min(a, b)
				larger = append(larger, map[string]string{
					"prompt":            fmt.Sprintf("Which is larger, %d or %d?", a, b),
					"reasoning_content": fmt.Sprintf("%d > %d", hi, lo),
					"response":          fmt.Sprint(hi)})
			}
		}
	}
	return []demoTask{
		{Name: "sum", Describe: `{"prompt","response"}: 100 sums`, Examples: sum, Ask: "请帮我计算3+4等于几。"},
		{Name: "larger", Describe: `{"prompt","reasoning_content","response"}: 90 comparisons`, Examples: larger,
			Ask: "Which is larger, 2 or 8?"},
	}
}

// demoSummary is what `lorakit demo --json` prints.
type demoSummary struct {
	Dir      string               `json:"dir"`
	Base     demoBase             `json:"base"`
	Tasks    []demoTaskResult     `json:"tasks"`
	Merge    *merge.VerifyResult  `json:"merge_verify"`
	Quantize demoQuant            `json:"quantize"`
	Serve    map[string]demoReply `json:"serve"`
	Seconds  float64              `json:"seconds"`
}

type demoBase struct {
	Params int64  `json:"params"`
	Hidden int    `json:"hidden_size"`
	Layers int    `json:"layers"`
	Vocab  int    `json:"vocab"`
	Dir    string `json:"dir"`
}

type demoTaskResult struct {
	Name        string  `json:"name"`
	Examples    int     `json:"examples"`
	ExactBefore float64 `json:"exact_match_before"`
	ExactAfter  float64 `json:"exact_match_after"`
	LossBefore  float64 `json:"loss_before"`
	LossAfter   float64 `json:"loss_after"`
	Steps       int     `json:"steps"`
	Seconds     float64 `json:"train_seconds"`
	Adapter     string  `json:"adapter"`
}

type demoQuant struct {
	InBytes      int64   `json:"in_weight_bytes"`
	OutBytes     int64   `json:"out_weight_bytes"`
	BitsPerParam float64 `json:"bits_per_param"`
	Dir          string  `json:"dir"`
}

type demoReply struct {
	Prompt    string `json:"prompt"`
	Content   string `json:"content"`
	Reasoning string `json:"reasoning_content,omitempty"`
}

func newDemoCmd() *cobra.Command {
	var keep string
	var asJSON bool
	var threads int
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the whole product offline on a tiny model: train two adapters, merge, quantise, serve",
		Long: `demo creates a tiny random Llama (byte-level tokenizer, ChatML template) as a real Hugging Face folder,
trains two LoRA adapters on two built-in synthetic SFT tasks and measures exact match before and after each,
merges one and checks merged == base+adapter logits, quantises the base to NF4, then serves both adapters over
the OpenAI-compatible API on a free local port and asks each one question. Nothing is downloaded.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir := keep
			if dir == "" {
				tmp, err := os.MkdirTemp("", "lorakit-demo-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(tmp)
				dir = tmp
			} else if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			log := cmd.OutOrStdout()
			if asJSON {
				log = cmd.ErrOrStderr()
			}
			sum, err := runDemo(cmd.Context(), dir, threads, log, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if keep == "" {
				sum.Dir = ""
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), sum)
			}
			if keep != "" {
				fmt.Fprintf(log, "files kept in %s\n", dir)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&keep, "keep", "", "write the files into DIR and keep them (default: a temporary folder)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a machine-readable summary (step lines go to stderr)")
	cmd.Flags().IntVar(&threads, "threads", 0, "worker threads (0: all CPUs)")
	return cmd
}

// runDemo writes each phase's result to log and the progress of long phases to prog.
func runDemo(ctx context.Context, dir string, threads int, log, prog io.Writer) (*demoSummary, error) {
	start := time.Now()
	s := &demoSummary{Dir: dir, Serve: map[string]demoReply{}}
	step := func(i int, format string, a ...any) {
		fmt.Fprintf(log, "[%d/6] %s\n", i, fmt.Sprintf(format, a...))
	}

	base := filepath.Join(dir, "base")
	o := testmodel.Default()
	o.Hidden, o.Intermediate, o.Layers, o.Heads, o.KVHeads = 64, 128, 2, 4, 2
	if err := testmodel.Write(base, o); err != nil {
		return nil, fmt.Errorf("demo: write base model: %w", err)
	}
	s.Base = demoBase{Params: demoParams(o), Hidden: o.Hidden, Layers: o.Layers, Vocab: o.Vocab, Dir: base}
	step(1, "base model: tiny random Llama, %d params (hidden %d, %d layers, byte-level BPE vocab %d, ChatML template) in %s",
		s.Base.Params, o.Hidden, o.Layers, o.Vocab, base)

	tasks := demoTasks()
	for i, t := range tasks {
		r, err := demoTrain(ctx, dir, base, t, threads, prog)
		if err != nil {
			return nil, err
		}
		s.Tasks = append(s.Tasks, *r)
		step(2+i, "task %q (%s): exact match %.0f%% → %.0f%% after LoRA r=16 (%d steps, %.1f s, loss %.2f → %.2f)",
			t.Name, t.Describe, 100*r.ExactBefore, 100*r.ExactAfter, r.Steps, r.Seconds, r.LossBefore, r.LossAfter)
	}

	merged := filepath.Join(dir, "merged-sum")
	mres, err := merge.Run(ctx, base, merged, merge.Options{
		Adapters: []merge.Source{{Dir: s.Tasks[0].Adapter, Weight: 1}}, Verify: true, Threads: threads})
	if err != nil {
		return nil, fmt.Errorf("demo: merge: %w", err)
	}
	s.Merge = mres.Verify
	step(4, "merge: W' = W + (α/r)·B·A for %d tensors → %s; max |logit(merged) − logit(base+adapter)| = %.2g (adapter moves logits by %.2g)",
		mres.Merged, merged, mres.Verify.MaxAbsDiff, mres.Verify.AdapterEffect)

	nf4 := filepath.Join(dir, "base-nf4")
	qres, err := quant.QuantizeFolder(base, nf4, quant.FolderOptions{Type: "nf4", BlockSize: 64, Double: true, Threads: max(threads, 1)})
	if err != nil {
		return nil, fmt.Errorf("demo: quantize: %w", err)
	}
	s.Quantize = demoQuant{InBytes: qres.InBytes, OutBytes: qres.OutBytes, BitsPerParam: qres.BitsPerParam, Dir: nf4}
	step(5, "quantize: NF4 with double quantisation, %.3f bits/param on the linear weights; weights %d → %d bytes (embeddings and norms kept)",
		qres.BitsPerParam, qres.InBytes, qres.OutBytes)

	if err := demoServe(ctx, base, tasks, s, threads); err != nil {
		return nil, err
	}
	for _, t := range tasks {
		r := s.Serve[t.Name]
		answer := fmt.Sprintf("%q", r.Content)
		if r.Reasoning != "" {
			answer = fmt.Sprintf("reasoning_content %q, content %q", strings.TrimSpace(r.Reasoning), r.Content)
		}
		step(6, "serve: POST /v1/chat/completions model=%q %q → %s", t.Name, t.Ask, answer)
	}
	s.Seconds = time.Since(start).Seconds()
	fmt.Fprintf(log, "demo finished in %.1f s\n", s.Seconds)
	return s, nil
}

// demoParams counts the parameters of a testmodel configuration.
func demoParams(o testmodel.Options) int64 {
	var n int64
	for _, t := range testmodel.Tensors(o) {
		e := int64(1)
		for _, d := range t.Shape {
			e *= int64(d)
		}
		n += e
	}
	return n
}

// demoTrain writes a task's data, measures the base, trains a LoRA adapter and measures it again.
func demoTrain(ctx context.Context, dir, base string, t demoTask, threads int, prog io.Writer) (*demoTaskResult, error) {
	data := filepath.Join(dir, t.Name+".jsonl")
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for _, ex := range t.Examples {
		if err := enc.Encode(ex); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(data, buf.Bytes(), 0o644); err != nil {
		return nil, err
	}
	ev := train.EvalConfig{Model: base, Data: data, Threads: threads}
	before, err := train.Evaluate(ctx, ev)
	if err != nil {
		return nil, fmt.Errorf("demo: evaluate base on %s: %w", t.Name, err)
	}
	cfg := train.DefaultConfig()
	cfg.Model, cfg.Data, cfg.Out = base, data, filepath.Join(dir, "adapter-"+t.Name)
	cfg.LR, cfg.Epochs, cfg.BatchSize, cfg.Threads, cfg.Seed = 5e-3, 100, 16, threads, 1
	cfg.Force = true // the demo's own folder: a rerun with the same --keep replaces its adapters
	rep := &trainReporter{w: prog, quiet: true}
	res, err := train.Run(ctx, cfg, rep)
	rep.close(err)
	if err != nil {
		return nil, fmt.Errorf("demo: train %s: %w", t.Name, err)
	}
	ev.Adapter = cfg.Out
	after, err := train.Evaluate(ctx, ev)
	if err != nil {
		return nil, fmt.Errorf("demo: evaluate adapter on %s: %w", t.Name, err)
	}
	return &demoTaskResult{Name: t.Name, Examples: len(t.Examples), ExactBefore: before.ExactMatch,
		ExactAfter: after.ExactMatch, LossBefore: before.Loss, LossAfter: after.Loss, Steps: res.Steps,
		Seconds: res.Seconds, Adapter: cfg.Out}, nil
}

// demoServe starts the server with both adapters on a free local port and asks each adapter its question.
func demoServe(ctx context.Context, base string, tasks []demoTask, s *demoSummary, threads int) error {
	m, err := models.Load(base, models.LoadOptions{Threads: threads})
	if err != nil {
		return fmt.Errorf("demo: load base for serving: %w", err)
	}
	defer m.Close()
	adapters := map[string]string{}
	for _, r := range s.Tasks {
		adapters[r.Name] = r.Adapter
	}
	srv, err := serve.New(serve.Config{Model: backend.FromModel(m), ModelName: "demo-base", ModelRoot: base, Adapters: adapters})
	if err != nil {
		return fmt.Errorf("demo: start server: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Start(sctx, ln) }()
	defer func() { stop(); <-done }()
	url := "http://" + ln.Addr().String() + "/v1/chat/completions"
	for _, t := range tasks {
		r, err := demoAsk(ctx, url, t.Name, t.Ask)
		if err != nil {
			return fmt.Errorf("demo: ask %s: %w", t.Name, err)
		}
		s.Serve[t.Name] = *r
	}
	return nil
}

func demoAsk(ctx context.Context, url, model, prompt string) (*demoReply, error) {
	body, _ := json.Marshal(map[string]any{"model": model, "temperature": 0, "max_tokens": 32,
		"messages": []map[string]string{{"role": "user", "content": prompt}}})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out struct {
		Choices []struct {
			Message struct {
				Content          *string `json:"content"`
				ReasoningContent *string `json:"reasoning_content"`
			} `json:"message"`
		} `json:"choices"`
		Error *struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("%s: decode response: %w", resp.Status, err)
	}
	if out.Error != nil || len(out.Choices) == 0 {
		return nil, fmt.Errorf("%s: %+v", resp.Status, out.Error)
	}
	r := &demoReply{Prompt: prompt}
	if c := out.Choices[0].Message.Content; c != nil {
		r.Content = *c
	}
	if c := out.Choices[0].Message.ReasoningContent; c != nil {
		r.Reasoning = *c
	}
	return r, nil
}
