package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/lorakit/lorakit/serve/engine"
	"github.com/lorakit/lorakit/serve/openai"
)

// sse writes Server-Sent Events the way OpenAI does: "data: <json>\n\n", ending with "data: [DONE]\n\n".
type sse struct {
	c   echo.Context
	w   *echo.Response
	err error
}

func startSSE(c echo.Context) *sse {
	h := c.Response().Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no")
	c.Response().WriteHeader(http.StatusOK)
	writeDeadline(c)
	c.Response().Flush()
	return &sse{c: c, w: c.Response()}
}

// send writes one data event and flushes it.
func (s *sse) send(v any) {
	if s.err != nil {
		return
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // "<think>" stays readable, as OpenAI sends it
	if err := enc.Encode(v); err != nil {
		s.err = err
		return
	}
	s.raw(bytes.TrimRight(buf.Bytes(), "\n"))
}

func (s *sse) raw(b []byte) {
	if s.err != nil {
		return
	}
	buf := make([]byte, 0, len(b)+8)
	buf = append(buf, "data: "...)
	buf = append(buf, b...)
	buf = append(buf, "\n\n"...)
	writeDeadline(s.c)
	if _, err := s.w.Write(buf); err != nil {
		s.err = err
		return
	}
	s.w.Flush()
}

func (s *sse) done() { s.raw([]byte("[DONE]")) }

// writeJSON sends v as JSON without HTML escaping ("<think>" stays readable, as OpenAI sends it).
func writeJSON(c echo.Context, status int, v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	writeDeadline(c)
	return c.Blob(status, echo.MIMEApplicationJSON, buf.Bytes())
}

// streamFormat is what one endpoint's SSE stream says; streamRuns owns the rest.
type streamFormat struct {
	// event sends the chunks of one event's text and tokens (a finishing event included, also of a failed choice)
	event func(ev event)
	// finish is the chunk that closes a choice that ended by itself with reason ev.Finish
	finish func(ev event) any
	// usage is the last chunk when the request asked for usage
	usage func(u openai.Usage) any
}

// streamRuns streams the choices' events to w (already started, with whatever opening chunks the endpoint sends)
// through f, counts their completion tokens for the log line and the usage chunk, and ends the stream: with the
// first failed choice's error event, or else the usage chunk when includeUsage, then [DONE]. A client that went
// away stops the choices and gets nothing more (errClientGone); n is the request's choices per prompt.
func (s *Server) streamRuns(c echo.Context, w *sse, runs []*run, n int, includeUsage bool, f streamFormat) error {
	ctx, cancel := context.WithCancel(c.Request().Context())
	defer cancel() // stops the fan-in goroutines if the client write fails
	completion := make([]int, len(runs))
	var failed error
	for ev := range fanIn(ctx, runs) {
		if w.err != nil {
			break // client gone: ctx ends, merge cancels the streams
		}
		f.event(ev)
		if ev.Finish != "" {
			completion[ev.index] = ev.CompletionTokens
			if ev.Finish == engine.FinishError || ev.Finish == engine.FinishCancel {
				if failed == nil {
					failed = ev.Err
				}
				continue
			}
			w.send(f.finish(ev))
		}
	}
	u := usageOf(runs, completion, n)
	noteUsage(c, u)
	if ctx.Err() != nil || w.err != nil {
		return errClientGone // counted as 499; nobody reads a reply
	}
	if failed != nil {
		w.send(openai.ErrorResponse{Error: streamError(failed)})
	} else if includeUsage {
		w.send(f.usage(u))
	}
	w.done()
	return nil
}
