package serve

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/lorakit/lorakit/serve/engine"
	"github.com/lorakit/lorakit/serve/openai"
)

// handleCompletions is POST /v1/completions.
func (s *Server) handleCompletions(c echo.Context) error {
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	req, oe := openai.DecodeCompletionLimit(body, s.model.VocabSize(), s.maxChoices)
	if oe != nil {
		return oe
	}
	if err := s.admitModel(c, req.Model); err != nil {
		return err
	}
	// Admission, before any tokenizing: the choices, each prompt's size, the echoed text (admit.go). The echo-only
	// path (max_tokens 0) passes the same checks as generation.
	if err := s.checkChoices(len(req.Prompts), req.Sampling.N); err != nil {
		return err
	}
	prompts := make([][]int, len(req.Prompts))
	echoText := make([]string, len(req.Prompts))
	for i, p := range req.Prompts {
		if p.IDs != nil {
			if len(p.IDs) > s.maxLen {
				return openai.ContextTooLong("prompt", s.maxLen, len(p.IDs), req.Sampling.MaxTokens)
			}
			prompts[i] = p.IDs
			if req.Echo {
				echoText[i] = s.model.Decode(p.IDs)
			}
			continue
		}
		ids, err := s.encode("prompt", p.Text, true)
		if err != nil {
			return err
		}
		prompts[i], echoText[i] = ids, p.Text
	}
	if req.Echo {
		if err := s.checkEcho(echoText, req.Sampling.N); err != nil {
			return err
		}
	}
	scoreOnly := req.Sampling.MaxTokens == 0 // echo only: the prompt's logprobs, nothing generated
	if scoreOnly {
		if !req.Sampling.Logprobs {
			return s.echoOnly(c, req, prompts, echoText)
		}
		req.Sampling.MaxTokens, req.Stream = 1, false // one step computes the prompt's logprobs; its token is dropped
	}
	constrain, err := s.constraint(req.Guide, "")
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	runs, err := s.submit(ctx, req.Model, "prompt", prompts, req.Sampling, constrain)
	if err != nil {
		return err
	}
	id, created := newID("cmpl-"), time.Now().Unix()
	if req.Stream {
		return s.streamCompletion(c, req, runs, id, created, echoText)
	}
	res, err := collectAll(ctx, runs)
	if err != nil {
		return err
	}
	out := openai.CompletionResponse{ID: id, Object: "text_completion", Created: created, Model: req.Model,
		SystemFingerprint: "lorakit", Choices: make([]openai.CompletionChoice, len(res))}
	completion := make([]int, len(res))
	for i, r := range res {
		text := r.text
		if scoreOnly {
			text, r.tokens, r.finish, r.completion = "", nil, engine.FinishLength, 0
		}
		if req.Echo {
			text = echoText[i/req.Sampling.N] + text
		}
		fr := r.finish
		ch := openai.CompletionChoice{Text: text, Index: i, FinishReason: &fr}
		if req.Sampling.Logprobs {
			tt := &tokenTexts{m: s.model}
			if req.Echo {
				ch.Logprobs = s.echoLogprobs(tt, runs[i].prompt, r.prompt)
			}
			ch.Logprobs = appendLogprobs(ch.Logprobs, s.completionLogprobs(tt, r.tokens))
		}
		out.Choices[i] = ch
		completion[i] = r.completion
	}
	u := usageOf(runs, completion, req.Sampling.N)
	out.Usage = u
	noteUsage(c, u)
	return writeJSON(c, http.StatusOK, out)
}

func (s *Server) echoOnly(c echo.Context, req *openai.Completion, prompts [][]int, echoText []string) error {
	out := openai.CompletionResponse{ID: newID("cmpl-"), Object: "text_completion", Created: time.Now().Unix(), Model: req.Model,
		SystemFingerprint: "lorakit"}
	if req.Model != s.name && !s.reg.Has(req.Model) {
		l, err := s.lease(c.Request().Context(), req.Model)
		if err != nil {
			return err
		}
		l.Release()
	}
	u := openai.Usage{}
	for i := range prompts {
		for j := 0; j < req.Sampling.N; j++ {
			fr := engine.FinishLength
			out.Choices = append(out.Choices, openai.CompletionChoice{Text: echoText[i], Index: i*req.Sampling.N + j, FinishReason: &fr})
		}
		u.PromptTokens += len(prompts[i])
	}
	u.TotalTokens = u.PromptTokens
	out.Usage = u
	return writeJSON(c, http.StatusOK, out)
}

// streamCompletion streams a completion: the echoed prompts first when asked for, then per choice its text as it
// comes and its finish.
func (s *Server) streamCompletion(c echo.Context, req *openai.Completion, runs []*run, id string, created int64, echoText []string) error {
	w := startSSE(c)
	chunk := func(ch openai.CompletionChoice) openai.CompletionResponse {
		r := openai.CompletionResponse{ID: id, Object: "text_completion", Created: created, Model: req.Model,
			SystemFingerprint: "lorakit", Choices: []openai.CompletionChoice{ch}}
		if req.IncludeUsage {
			r.Usage = openai.NullUsage
		}
		return r
	}
	if req.Echo {
		for _, r := range runs {
			w.send(chunk(openai.CompletionChoice{Text: echoText[r.index/req.Sampling.N], Index: r.index}))
		}
	}
	texts := make([]*tokenTexts, len(runs))
	echoed := make([]bool, len(runs))
	for i := range texts {
		texts[i] = &tokenTexts{m: s.model}
	}
	return s.streamRuns(c, w, runs, req.Sampling.N, req.IncludeUsage, streamFormat{
		event: func(ev event) {
			if ev.Text == "" && len(ev.Tokens) == 0 && ev.Prompt == nil {
				return
			}
			ch := openai.CompletionChoice{Text: ev.Text, Index: ev.index}
			if req.Sampling.Logprobs {
				if req.Echo && !echoed[ev.index] {
					echoed[ev.index] = true
					ch.Logprobs = s.echoLogprobs(texts[ev.index], runs[ev.index].prompt, ev.Prompt)
				}
				ch.Logprobs = appendLogprobs(ch.Logprobs, s.completionLogprobs(texts[ev.index], ev.Tokens))
			}
			w.send(chunk(ch))
		},
		finish: func(ev event) any {
			fr := ev.Finish
			return chunk(openai.CompletionChoice{Text: "", Index: ev.index, FinishReason: &fr})
		},
		usage: func(u openai.Usage) any {
			return openai.CompletionResponse{ID: id, Object: "text_completion", Created: created, Model: req.Model,
				SystemFingerprint: "lorakit", Choices: []openai.CompletionChoice{}, Usage: u}
		},
	})
}
