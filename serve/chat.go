package serve

import (
	"errors"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/lorakit/lorakit/models/chat"
	"github.com/lorakit/lorakit/serve/engine"
	"github.com/lorakit/lorakit/serve/openai"
)

// handleChat is POST /v1/chat/completions.
func (s *Server) handleChat(c echo.Context) error {
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	req, oe := openai.DecodeChat(body, s.model.VocabSize())
	if oe != nil {
		return oe
	}
	if err := s.admitModel(c, req.Model); err != nil {
		return err
	}
	if err := s.checkChoices(1, req.Sampling.N); err != nil {
		return err
	}
	size := 0
	for _, m := range req.Messages {
		size += len(m.Content)
	}
	if err := s.checkBytes("messages", size); err != nil {
		return err // refused by size before the template or the tokenizer sees it
	}
	prompt, err := s.model.RenderChat(req.Messages, req.Tools, req.TemplateKwargs)
	if errors.Is(err, chat.ErrTemplateNoTools) {
		return openai.BadRequest("tools", "this model's chat template cannot take tools: %v", err)
	}
	if err != nil {
		return openai.BadRequest("messages", "the chat template failed on these messages: %v", err)
	}
	// Tool calls are parsed (as vLLM's tool parsers do) when the request offers tools and lets the model call
	// them; the format follows the chat template.
	parser := ""
	if req.Tools != nil && req.ToolChoice != openai.ToolChoiceNone {
		if parser = s.model.ToolParser(); parser == "" && req.ToolChoice == openai.ToolChoiceAuto {
			return openai.BadRequest("tools", "this model's chat template renders tools but its tool-call format is not one lorakit parses (Hermes <tool_call> blocks or Llama 3.1+ JSON); use tool_choice \"none\" or leave out tools")
		}
	}
	constrain, err := s.constraint(req.Guide, parser)
	if err != nil {
		return err
	}
	ids, err := s.encode("messages", prompt, false)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	runs, err := s.submit(ctx, req.Model, "messages", [][]int{ids}, req.Sampling, constrain)
	if err != nil {
		return err
	}
	// A completion that opens with <think> is split into reasoning and content whatever the template says (as
	// vLLM's deepseek_r1 parser does): models fine-tuned on reasoning_content data emit the block themselves.
	// Text that does not start with <think> passes through unchanged. A constrained output has no think block,
	// even after a generation prompt that opens one: it is all content.
	startThink := s.model.SupportsReasoning() && openai.PromptOpensThink(prompt) && constrain == nil
	id, created := newID("chatcmpl-"), time.Now().Unix()
	if req.Stream {
		return s.streamChat(c, req, runs, id, created, startThink, parser)
	}
	res, err := collectAll(ctx, runs)
	if err != nil {
		return err
	}
	out := openai.ChatCompletion{ID: id, Object: "chat.completion", Created: created, Model: req.Model,
		SystemFingerprint: "lorakit", Choices: make([]openai.ChatChoice, len(res))}
	completion := make([]int, len(res))
	for i, r := range res {
		msg := openai.ChatMessageOut{Role: "assistant"}
		msg.ReasoningContent, msg.Content = openai.SplitReasoning(r.text, startThink)
		finish := r.finish
		if parser != "" && msg.Content != nil {
			var calls []openai.ToolCall
			msg.Content, calls = openai.SplitToolCalls(parser, *msg.Content)
			if req.SingleToolCall && len(calls) > 1 {
				calls = calls[:1]
			}
			for _, tc := range calls {
				msg.ToolCalls = append(msg.ToolCalls, openai.ChatToolCall{ID: newID("call_"), Type: "function",
					Function: openai.FunctionCall{Name: tc.Name, Arguments: tc.Arguments}})
			}
			finish = toolFinish(finish, len(calls) > 0)
		}
		ch := openai.ChatChoice{Index: i, Message: msg, FinishReason: finish}
		if req.Sampling.Logprobs {
			ch.Logprobs = s.chatLogprobs(&tokenTexts{m: s.model}, r.tokens)
		}
		out.Choices[i] = ch
		completion[i] = r.completion
	}
	out.Usage = usageOf(runs, completion, req.Sampling.N)
	noteUsage(c, out.Usage)
	return writeJSON(c, http.StatusOK, out)
}

// toolFinish is the finish_reason of a choice that made tool calls: "tool_calls" when it stopped by itself.
func toolFinish(finish string, called bool) string {
	if called && finish == engine.FinishStop {
		return "tool_calls"
	}
	return finish
}

// streamChat streams a chat completion: per choice the role, then reasoning, content and tool calls as they come,
// then the finish, in the order OpenAI sends them.
func (s *Server) streamChat(c echo.Context, req *openai.Chat, runs []*run, id string, created int64, startThink bool, parser string) error {
	w := startSSE(c)
	chunk := func(choices []openai.ChatChunkChoice) openai.ChatCompletionChunk {
		ch := openai.ChatCompletionChunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: req.Model,
			SystemFingerprint: "lorakit", Choices: choices}
		if req.IncludeUsage {
			ch.Usage = openai.NullUsage
		}
		return ch
	}
	empty := ""
	for _, r := range runs {
		w.send(chunk([]openai.ChatChunkChoice{{Index: r.index, Delta: openai.ChatDelta{Role: "assistant", Content: &empty}}}))
	}
	splitters := make([]*openai.ReasoningSplitter, len(runs))
	tools := make([]*openai.ToolCallSplitter, len(runs))
	texts := make([]*tokenTexts, len(runs))
	ncalls := make([]int, len(runs))
	for i := range splitters {
		splitters[i] = openai.NewReasoningSplitter(startThink)
		texts[i] = &tokenTexts{m: s.model}
		if parser != "" {
			tools[i] = openai.NewToolCallSplitter(parser)
		}
	}
	toolCalls := func(ev event, content string) (string, []openai.ChatToolCallDelta) {
		ts := tools[ev.index]
		if ts == nil {
			return content, nil
		}
		var tc []openai.ToolCall
		content, tc = ts.Add(content)
		if ev.Finish != "" {
			c2, tc2 := ts.Flush()
			content, tc = content+c2, append(tc, tc2...)
		}
		var calls []openai.ChatToolCallDelta
		for _, call := range tc {
			if req.SingleToolCall && ncalls[ev.index] > 0 {
				break
			}
			calls = append(calls, openai.ChatToolCallDelta{Index: ncalls[ev.index], ID: newID("call_"), Type: "function",
				Function: openai.FunctionCall{Name: call.Name, Arguments: call.Arguments}})
			ncalls[ev.index]++
		}
		return content, calls
	}
	return s.streamRuns(c, w, runs, req.Sampling.N, req.IncludeUsage, streamFormat{
		event: func(ev event) {
			rsn, content := splitters[ev.index].Add(ev.Text)
			if ev.Finish != "" {
				r2, c2 := splitters[ev.index].Flush()
				rsn, content = rsn+r2, content+c2
			}
			content, calls := toolCalls(ev, content)
			var lp *openai.ChatLogprobs
			if req.Sampling.Logprobs && len(ev.Tokens) > 0 {
				lp = s.chatLogprobs(texts[ev.index], ev.Tokens)
			}
			if rsn == "" && content == "" && lp == nil && len(calls) == 0 {
				return
			}
			d := openai.ChatDelta{ToolCalls: calls}
			if rsn != "" {
				d.ReasoningContent = &rsn
			}
			if content != "" || (rsn == "" && len(calls) == 0 && lp != nil) {
				d.Content = &content
			}
			w.send(chunk([]openai.ChatChunkChoice{{Index: ev.index, Delta: d, Logprobs: lp}}))
		},
		finish: func(ev event) any {
			fr := toolFinish(ev.Finish, ncalls[ev.index] > 0)
			return chunk([]openai.ChatChunkChoice{{Index: ev.index, Delta: openai.ChatDelta{}, FinishReason: &fr}})
		},
		usage: func(u openai.Usage) any {
			ch := chunk([]openai.ChatChunkChoice{})
			ch.Usage = u
			return ch
		},
	})
}
