package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/serve/loadgen"
)

// serveBench holds the flags of `bench --serve` (a load client against a running server) and of
// `bench --write-adapters` (the random adapters such a run serves).
type serveBench struct {
	url, api, models, ids, outputs string
	clients, requests, shared      int
	writeAdapters, rank            int
	out                            string
}

func addServeBenchFlags(f *pflag.FlagSet) *serveBench {
	s := &serveBench{}
	f.StringVar(&s.url, "serve", "", "measure a running server at this URL instead: --clients streaming clients, --requests each, --prompt random token ids and --gen new tokens per request (see README, Serving performance)")
	f.StringVar(&s.api, "api", "openai", `with --serve: "openai" (/v1/completions: lorakit, vLLM) or "llama" (llama.cpp's llama-server /completion)`)
	f.IntVar(&s.clients, "clients", 16, "with --serve: concurrent clients")
	f.IntVar(&s.requests, "requests", 2, "with --serve: requests per client, one after another")
	f.StringVar(&s.models, "models", "", "with --serve: comma-separated model (adapter) names, client i uses the (i mod n)-th; empty: the server's default")
	f.IntVar(&s.shared, "shared-prefix", 0, "with --serve: this many token ids in front of every prompt, the same in all requests (a system prompt, for prefix caching)")
	f.StringVar(&s.ids, "token-ids", "300:30000", "with --serve: range LO:HI of the random prompt token ids")
	f.StringVar(&s.outputs, "outputs", "", "with --serve: write every request's text to this JSON file (to compare two runs' greedy outputs)")
	f.IntVar(&s.writeAdapters, "write-adapters", 0, "write this many random PEFT adapters (rank --adapter-rank on the seven projections) for --model into --out/a0, a1, ... and exit")
	f.IntVar(&s.rank, "adapter-rank", 16, "with --write-adapters: LoRA rank (alpha = 2·rank)")
	f.StringVar(&s.out, "out", "", "with --write-adapters: folder to write the adapters into (must not exist)")
	return s
}

// serveBenchResult is what `bench --serve --json` prints.
type serveBenchResult struct {
	URL        string  `json:"url"`
	API        string  `json:"api"`
	Clients    int     `json:"clients"`
	Requests   int     `json:"requests"`
	Failed     int     `json:"failed"`
	Prompt     int     `json:"prompt_tokens"`
	Shared     int     `json:"shared_prefix_tokens"`
	Gen        int     `json:"max_tokens"`
	Models     int     `json:"models"`
	Tokens     int     `json:"completion_tokens"`
	Seconds    float64 `json:"seconds"`
	TokS       float64 `json:"tok_s"`
	TTFTp50    float64 `json:"ttft_p50_ms"`
	TTFTp99    float64 `json:"ttft_p99_ms"`
	ITLp50     float64 `json:"itl_p50_ms"`
	ITLp99     float64 `json:"itl_p99_ms"`
	FirstError string  `json:"first_error,omitempty"`
}

func ms(d time.Duration) float64 { return round1(float64(d) / 1e6) }

func runServeBench(ctx context.Context, w io.Writer, s *serveBench, prompt, gen int, asJSON bool) error {
	lo, hi, ok := strings.Cut(s.ids, ":")
	minID, err1 := strconv.Atoi(lo)
	maxID, err2 := strconv.Atoi(hi)
	if !ok || err1 != nil || err2 != nil || minID < 0 || maxID <= minID {
		return fmt.Errorf("bench: --token-ids %q: want LO:HI with 0 ≤ LO < HI", s.ids)
	}
	cfg := loadgen.Config{URL: s.url, API: loadgen.API(s.api), Clients: s.clients, Requests: s.requests,
		MaxTokens: gen, PromptTokens: prompt, MinID: minID, MaxID: maxID, CachePrompt: s.shared > 0}
	if s.models != "" {
		cfg.Models = strings.Split(s.models, ",")
	}
	if s.shared > 0 { // the shared prefix: ids from a fixed seed, unlike every request's own ids
		rng := rand.New(rand.NewPCG(0, 0))
		for range s.shared {
			cfg.SharedPrefix = append(cfg.SharedPrefix, minID+rng.IntN(maxID-minID))
		}
	}
	res, err := loadgen.Run(ctx, cfg)
	if err != nil {
		return fmt.Errorf("bench --serve: %w", err)
	}
	if s.outputs != "" {
		data, err := json.Marshal(res.Outputs)
		if err != nil {
			return err
		}
		if err := os.WriteFile(s.outputs, data, 0o644); err != nil {
			return fmt.Errorf("bench --outputs: %w", err)
		}
	}
	r := serveBenchResult{URL: s.url, API: s.api, Clients: s.clients, Requests: res.Requests, Failed: res.Failed,
		Prompt: prompt, Shared: s.shared, Gen: gen, Models: len(cfg.Models), Tokens: res.Tokens,
		Seconds: round1(res.Wall.Seconds()), TokS: round1(res.TokensPerSec()),
		TTFTp50: ms(loadgen.Percentile(res.TTFT, 50)), TTFTp99: ms(loadgen.Percentile(res.TTFT, 99)),
		ITLp50: ms(loadgen.Percentile(res.ITL, 50)), ITLp99: ms(loadgen.Percentile(res.ITL, 99)), FirstError: res.FirstError}
	if asJSON {
		return printJSON(w, r)
	}
	fmt.Fprintf(w, "%s (%s), %d clients × %d requests, %d+%d prompt + %d new tokens, %d models: %.1f tok/s (%d tokens in %.1f s), TTFT p50 %.1f ms p99 %.1f ms, ITL p50 %.1f ms p99 %.1f ms, %d failed\n",
		r.URL, r.API, s.clients, s.requests, s.shared, prompt, gen, r.Models, r.TokS, r.Tokens, r.Seconds, r.TTFTp50, r.TTFTp99, r.ITLp50, r.ITLp99, r.Failed)
	if r.FirstError != "" {
		fmt.Fprintf(w, "first failure: %s\n", r.FirstError)
	}
	return nil
}

// writeBenchAdapters writes n random rank-r PEFT adapters on the seven projections of the model at dir (a
// folder or a GGUF file) into out/a0 ... out/a{n-1}: factors ~ N(0, 0.02²), so that they change the output.
func writeBenchAdapters(cmd *cobra.Command, dir, out string, n, r int) error {
	if dir == "" || out == "" || r < 1 {
		return fmt.Errorf("bench --write-adapters: give --model, --out and --adapter-rank ≥ 1")
	}
	if _, err := os.Stat(out); err == nil {
		return fmt.Errorf("bench --write-adapters: --out %s exists; give a new folder", out)
	}
	m, err := models.Load(dir, models.LoadOptions{NoTokenizer: true})
	if err != nil {
		return fmt.Errorf("bench --write-adapters: %w", err)
	}
	defer m.Close()
	for i := range n {
		rng := rand.New(rand.NewPCG(uint64(i), 13))
		cfg := lora.NewConfig(r, float64(2*r), lora.DefaultTargets)
		a := lora.New(cfg)
		for _, mod := range m.Net.Modules() {
			lin, ok := m.Net.Linear(mod)
			if !ok || mod == "lm_head" {
				continue
			}
			p := cfg.NewPair(mod, lin.In(), lin.Out())
			for j := range p.A {
				p.A[j] = float32(rng.NormFloat64()) * 0.02
			}
			for j := range p.B {
				p.B[j] = float32(rng.NormFloat64()) * 0.02
			}
			a.Modules[mod] = p
		}
		path := filepath.Join(out, fmt.Sprintf("a%d", i))
		if err := a.Save(path); err != nil {
			return fmt.Errorf("bench --write-adapters: %w", err)
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s (%d/%d)\n", path, i+1, n)
	}
	return nil
}
