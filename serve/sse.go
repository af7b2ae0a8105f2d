package serve

import (
	"bytes"
	"encoding/json"
	"net/http"

	"github.com/labstack/echo/v4"
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
