package serve

import (
	"log/slog"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/lorakit/lorakit/serve/openai"
)

// Keys of what handlers note on the echo.Context for the request log line.
const (
	ctxModel = "lorakit.model"
	ctxUsage = "lorakit.usage"
)

// noteModel records the request's `model` (base or adapter name) for its log line.
func noteModel(c echo.Context, model string) { c.Set(ctxModel, model) }

// noteUsage records the request's token counts for its log line.
func noteUsage(c echo.Context, u openai.Usage) { c.Set(ctxUsage, u) }

// logRequest writes one structured line per request: method, path, model, status, tokens, duration. status is
// the one counted in /metrics (499 for a client that went away).
func (s *Server) logRequest(c echo.Context, status int, took time.Duration) {
	r := c.Request()
	attrs := []any{"method", r.Method, "path", r.URL.Path, "status", status, "duration_ms", took.Milliseconds()}
	if m, ok := c.Get(ctxModel).(string); ok {
		attrs = append(attrs, "model", m)
	}
	if u, ok := c.Get(ctxUsage).(openai.Usage); ok {
		attrs = append(attrs, "prompt_tokens", u.PromptTokens, "completion_tokens", u.CompletionTokens)
	}
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelError
	}
	s.log.Log(r.Context(), level, "request", attrs...)
}

// adapterEvents logs the registry's loads, failures and evictions and passes them on to /metrics.
type adapterEvents struct {
	m   *metrics
	log *slog.Logger
}

// AdapterLoaded implements engine.RegistryObserver.
func (a adapterEvents) AdapterLoaded(name string, took time.Duration, err error) {
	a.m.AdapterLoaded(name, took, err)
	if err != nil {
		a.log.Warn("adapter load failed", "adapter", name, "duration_ms", took.Milliseconds(), "error", err.Error())
		return
	}
	a.log.Info("adapter loaded", "adapter", name, "duration_ms", took.Milliseconds())
}

// AdapterEvicted implements engine.RegistryObserver.
func (a adapterEvents) AdapterEvicted(name string) {
	a.m.AdapterEvicted(name)
	a.log.Info("adapter evicted", "adapter", name)
}
