package serve

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"

	"github.com/labstack/echo/v4"

	"github.com/lorakit/lorakit/serve/engine"
	"github.com/lorakit/lorakit/serve/openai"
)

// admitModel notes the request's model for its log line and refuses a name that can be neither the base nor an
// adapter (whether an adapter of that name exists is the lease's question).
func (s *Server) admitModel(c echo.Context, model string) error {
	noteModel(c, model)
	if model != s.name && !engine.ValidName(model) {
		return openai.ModelNotFound(model)
	}
	return nil
}

// run is one engine request of an HTTP request (a choice).
type run struct {
	index  int
	prompt []int
	stream *engine.Stream
}

// submit resolves the model once per choice (each holds its own adapter reference, released by the engine when
// the choice ends) and queues every choice. On error nothing stays queued.
// param names the prompt's field in errors: "messages" (a prompt rendered by the chat template, which also
// stops at its end of turn) or "prompt".
func (s *Server) submit(ctx context.Context, model, param string, prompts [][]int, sp openai.Sampling, constrain func() engine.Constraint) ([]*run, error) {
	var runs []*run
	cancelAll := func() {
		for _, r := range runs {
			r.stream.Cancel()
		}
	}
	seed := int64(0)
	if sp.Seed != nil {
		seed = *sp.Seed
	} else {
		var b [8]byte
		_, _ = rand.Read(b[:])
		seed = int64(binary.LittleEndian.Uint64(b[:]) >> 1)
	}
	group := new(int) // this request's choices share the batch fairly with other requests (engine.Request.Group)
	for p, ids := range prompts {
		for i := 0; i < sp.N; i++ {
			l, err := s.lease(ctx, model)
			if err != nil {
				cancelAll()
				return nil, err
			}
			req := &engine.Request{Group: group, Prompt: ids, MaxTokens: sp.MaxTokens, Stop: sp.Stop, LogitBias: sp.LogitBias,
				Logprobs: sp.Logprobs, TopLogprobs: sp.TopLogprobs, PromptLogprobs: sp.PromptLogprobs, IgnoreEOS: sp.IgnoreEOS,
				Chat: param == "messages",
				Sampling: engine.SamplingParams{Temperature: sp.Temperature, TopP: sp.TopP, MinP: sp.MinP, TopK: sp.TopK,
					RepetitionPenalty: sp.RepetitionPenalty, PresencePenalty: sp.PresencePenalty,
					FrequencyPenalty: sp.FrequencyPenalty, Seed: seed + int64(p*sp.N+i)}}
			if l != nil {
				req.Adapter, req.AdapterName, req.Release = l.Delta(), model, l.Release
			}
			if constrain != nil {
				req.Constraint = constrain()
			}
			st, err := s.eng.Submit(ctx, req)
			if err != nil {
				cancelAll()
				return nil, submitError(err, param)
			}
			runs = append(runs, &run{index: p*sp.N + i, prompt: ids, stream: st})
		}
	}
	return runs, nil
}

// event is one engine event of choice index.
type event struct {
	index int
	engine.Event
}

// fanIn merges the choices' events into one channel (closed when every choice ended or ctx ended).
func fanIn(ctx context.Context, runs []*run) <-chan event {
	out := make(chan event, 16)
	done := make(chan struct{}, len(runs))
	for _, r := range runs {
		go func(r *run) {
			defer func() { done <- struct{}{} }()
			for {
				ev, err := r.stream.Recv(ctx)
				if err != nil {
					if !errors.Is(err, io.EOF) {
						r.stream.Cancel()
					}
					return
				}
				select {
				case out <- event{r.index, ev}:
				case <-ctx.Done():
					r.stream.Cancel()
					return
				}
			}
		}(r)
	}
	go func() {
		for range runs {
			<-done
		}
		close(out)
	}()
	return out
}

// result is a finished choice.
type result struct {
	text                     string
	tokens                   []engine.TokenLogprob
	prompt                   []engine.TokenLogprob // prompt logprobs (echo)
	finish                   string
	err                      error
	promptTokens, completion int
}

// collectAll waits for every choice to finish.
func collectAll(ctx context.Context, runs []*run) ([]result, error) {
	res := make([]result, len(runs))
	for ev := range fanIn(ctx, runs) {
		r := &res[ev.index]
		r.text += ev.Text
		r.tokens = append(r.tokens, ev.Tokens...)
		r.prompt = append(r.prompt, ev.Prompt...)
		if ev.Finish != "" {
			r.finish, r.err, r.promptTokens, r.completion = ev.Finish, ev.Err, ev.PromptTokens, ev.CompletionTokens
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, r := range res {
		if r.err != nil && r.finish == engine.FinishError {
			return nil, openai.Internal("generation failed: %v", r.err)
		}
		if r.finish == engine.FinishCancel {
			return nil, openai.ShuttingDown()
		}
	}
	return res, nil
}

// streamError is the error event that ends a stream whose choice failed or was cut.
func streamError(err error) *openai.Error {
	if errors.Is(err, engine.ErrShuttingDown) {
		return openai.ShuttingDown()
	}
	return openai.Internal("generation failed: %v", err)
}

// usageOf counts each distinct prompt once (as OpenAI does for n > 1) and every completion.
func usageOf(runs []*run, completion []int, n int) openai.Usage {
	u := openai.Usage{}
	for i, r := range runs {
		if i%n == 0 {
			u.PromptTokens += len(r.prompt)
		}
		u.CompletionTokens += completion[i]
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	return u
}
