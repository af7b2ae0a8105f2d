// Package loadgen drives a serving benchmark: concurrent streaming clients against an OpenAI-compatible
// server (/v1/completions, lorakit or vLLM) or llama.cpp's llama-server (/completion), each request a prompt
// of token ids and a fixed number of new tokens (end-of-sequence ignored), measuring aggregate throughput, time
// to first token and the gaps between streamed tokens. It knows nothing of how the server is run.
package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// API is the protocol of the server under test.
type API string

const (
	// OpenAI is POST /v1/completions with stream, ignore_eos and stream_options.include_usage.
	OpenAI API = "openai"
	// LlamaCpp is llama-server's POST /completion with stream, n_predict and ignore_eos.
	LlamaCpp API = "llama"
)

// Config is one load run.
type Config struct {
	URL string // server base URL, e.g. http://127.0.0.1:8080
	API API
	// Clients run concurrently, each sending Requests requests one after another.
	Clients, Requests int
	// MaxTokens new tokens per request.
	MaxTokens int
	// Models are the OpenAI model names; client i uses Models[i % len(Models)] (empty: the server's default).
	Models []string
	// PromptTokens is the length of each request's own random token ids (from a seed per client and request),
	// after SharedPrefix, the same ids in every request (a system prompt for prefix caching). Ids are drawn
	// from [MinID, MaxID).
	PromptTokens int
	SharedPrefix []int
	MinID, MaxID int
	// CachePrompt is llama-server's cache_prompt (its prefix reuse across a slot's requests).
	CachePrompt bool
	// Timeout bounds each request (default 10 minutes).
	Timeout time.Duration
}

// Result is what a run measured. TTFT is from sending a request to its first token; ITL are the gaps between
// successive token events of a stream (a server that sends several tokens in one event shows one gap for
// them); Outputs holds each request's text, by client then request, for comparing runs.
type Result struct {
	Requests, Failed int
	Tokens           int // completion tokens as the server counted them
	Wall             time.Duration
	TTFT, ITL        []time.Duration
	Outputs          [][]string
	FirstError       string
}

// TokensPerSec is the aggregate completion throughput.
func (r *Result) TokensPerSec() float64 {
	if r.Wall <= 0 {
		return 0
	}
	return float64(r.Tokens) / r.Wall.Seconds()
}

// Percentile is the p-th percentile (nearest rank) of d, 0 for none.
func Percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(p/100*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// Prompt is the token ids of client c's request r under cfg.
func (cfg *Config) Prompt(c, r int) []int {
	rng := rand.New(rand.NewPCG(uint64(c)+1, uint64(r)+1))
	ids := slices.Clone(cfg.SharedPrefix)
	for range cfg.PromptTokens {
		ids = append(ids, cfg.MinID+rng.IntN(max(cfg.MaxID-cfg.MinID, 1)))
	}
	return ids
}

// Run drives the load and waits for every request.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Clients < 1 || cfg.Requests < 1 || cfg.MaxTokens < 1 {
		return nil, fmt.Errorf("loadgen: clients, requests and max tokens must be at least 1 (got %d, %d, %d)", cfg.Clients, cfg.Requests, cfg.MaxTokens)
	}
	if cfg.API != OpenAI && cfg.API != LlamaCpp {
		return nil, fmt.Errorf("loadgen: api %q is not %q or %q", cfg.API, OpenAI, LlamaCpp)
	}
	if cfg.PromptTokens+len(cfg.SharedPrefix) < 1 {
		return nil, errors.New("loadgen: a request needs at least one prompt token")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Minute
	}
	// llama-server (b4748) closes a kept-alive connection after a streamed reply, and a POST sent on it fails
	// with EOF: a new connection per request there (loopback; its cost is not in TTFT's order of magnitude).
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Clients, MaxConnsPerHost: cfg.Clients,
		DisableKeepAlives: cfg.API == LlamaCpp}}
	res := &Result{Outputs: make([][]string, cfg.Clients)}
	var mu sync.Mutex
	var wg sync.WaitGroup
	t0 := time.Now()
	for c := range cfg.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range cfg.Requests {
				o, err := cfg.one(ctx, client, c, r)
				mu.Lock()
				res.Requests++
				if err != nil {
					res.Failed++
					if res.FirstError == "" {
						res.FirstError = err.Error()
					}
				} else {
					res.Tokens += o.tokens
					res.TTFT = append(res.TTFT, o.ttft)
					res.ITL = append(res.ITL, o.gaps...)
				}
				res.Outputs[c] = append(res.Outputs[c], o.text)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.Wall = time.Since(t0)
	client.CloseIdleConnections()
	return res, ctx.Err()
}

type outcome struct {
	tokens int
	ttft   time.Duration
	gaps   []time.Duration
	text   string
}

func (cfg *Config) body(c, r int) ([]byte, string) {
	prompt := cfg.Prompt(c, r)
	if cfg.API == LlamaCpp {
		b, _ := json.Marshal(map[string]any{"prompt": prompt, "n_predict": cfg.MaxTokens, "ignore_eos": true,
			"temperature": 0, "stream": true, "cache_prompt": cfg.CachePrompt})
		return b, "/completion"
	}
	m := map[string]any{"prompt": prompt, "max_tokens": cfg.MaxTokens, "ignore_eos": true, "temperature": 0,
		"stream": true, "stream_options": map[string]any{"include_usage": true}}
	if len(cfg.Models) > 0 {
		m["model"] = cfg.Models[c%len(cfg.Models)]
	}
	b, _ := json.Marshal(m)
	return b, "/v1/completions"
}

// one sends client c's request r and reads its stream.
//
// complexity: one SSE stream of either protocol, each event a token, a usage count or the end.
func (cfg *Config) one(ctx context.Context, client *http.Client, c, r int) (outcome, error) {
	var o outcome
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	body, path := cfg.body(c, r)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(cfg.URL, "/")+path, bytes.NewReader(body))
	if err != nil {
		return o, err
	}
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return o, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return o, fmt.Errorf("%s: %s: %s", path, resp.Status, strings.TrimSpace(string(msg)))
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var text strings.Builder
	var last time.Time
	events := 0
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || line == "[DONE]" {
			continue
		}
		now := time.Now()
		piece, count, err := cfg.event(line)
		if err != nil {
			return o, err
		}
		if count > 0 {
			o.tokens = count
		}
		if piece == "" {
			continue
		}
		events++
		text.WriteString(piece)
		if last.IsZero() {
			o.ttft = now.Sub(start)
		} else {
			o.gaps = append(o.gaps, now.Sub(last))
		}
		last = now
	}
	if err := sc.Err(); err != nil {
		return o, err
	}
	o.text = text.String()
	if o.tokens == 0 {
		o.tokens = events // a server that does not count: one token per event
	}
	if last.IsZero() {
		return o, fmt.Errorf("%s: the stream ended without a token", path)
	}
	return o, nil
}

// event decodes one SSE data line: the text it adds and, on the event that carries it, the completion token
// count.
func (cfg *Config) event(line string) (piece string, count int, _ error) {
	if cfg.API == LlamaCpp {
		var ev struct {
			Content         string `json:"content"`
			Stop            bool   `json:"stop"`
			TokensPredicted int    `json:"tokens_predicted"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			return "", 0, fmt.Errorf("llama-server event %q: %w", line, err)
		}
		if ev.Stop {
			count = ev.TokensPredicted
		}
		return ev.Content, count, nil
	}
	var ev struct {
		Choices []struct {
			Text string `json:"text"`
		} `json:"choices"`
		Usage *struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
		Error *struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(line), &ev); err != nil {
		return "", 0, fmt.Errorf("completion chunk %q: %w", line, err)
	}
	if ev.Error != nil {
		return "", 0, fmt.Errorf("server error in stream: %s", ev.Error.Message)
	}
	if ev.Usage != nil {
		count = ev.Usage.CompletionTokens
	}
	for _, ch := range ev.Choices {
		piece += ch.Text
	}
	return piece, count, nil
}
