// Package openai holds the OpenAI wire types lorakit serves, the decoding and validation of requests, the
// error shape, and pure translation helpers (reasoning split). It knows nothing of HTTP routing or the engine.
package openai

import (
	"fmt"
	"math"
	"net/http"
	"time"
)

// Error is an OpenAI error with the HTTP status it is sent with.
// Wire shape: {"error":{"message","type","param","code"}}.
type Error struct {
	Status  int     `json:"-"`
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// ErrorResponse is the body of every error reply.
type ErrorResponse struct {
	Error *Error `json:"error"`
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Type, e.Message) }

func strp(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// BadRequest is a 400 invalid_request_error naming the offending parameter (may be "").
func BadRequest(param, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Message: fmt.Sprintf(format, args...), Type: "invalid_request_error", Param: strp(param)}
}

// ContextTooLong is the 400 OpenAI sends when prompt + completion exceed the context window. param is where the
// prompt came from: "messages" (chat) or "prompt" (completions).
func ContextTooLong(param string, maxLen, prompt, completion int) *Error {
	return &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: strp(param),
		Code: strp("context_length_exceeded"),
		Message: fmt.Sprintf("This model's maximum context length is %d tokens. However, you requested %d tokens "+
			"(%d in the %s, %d in the completion). Please reduce the length of the %s or completion.",
			maxLen, sat(prompt, completion), prompt, param, completion, param)}
}

// sat is a+b for non-negative ints, saturating instead of overflowing (max_tokens may be 2⁶³−1).
func sat(a, b int) int {
	if a > math.MaxInt-b {
		return math.MaxInt
	}
	return a + b
}

// Unauthorized is the 401 for a missing or wrong API key.
func Unauthorized() *Error {
	return &Error{Status: http.StatusUnauthorized, Type: "invalid_request_error", Code: strp("invalid_api_key"),
		Message: "Incorrect API key provided. Send it as 'Authorization: Bearer <key>'."}
}

// PromptTooLong is the 400 for a prompt refused before it was fully tokenized; detail says why.
func PromptTooLong(param string, maxLen int, detail string) *Error {
	return &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: strp(param),
		Code:    strp("context_length_exceeded"),
		Message: fmt.Sprintf("This model's maximum context length is %d tokens; %s. Please reduce the length of the %s.", maxLen, detail, param)}
}

// ModelNotFound is the 404 for an unknown model or adapter name.
func ModelNotFound(name string) *Error {
	return &Error{Status: http.StatusNotFound, Type: "invalid_request_error", Param: strp("model"), Code: strp("model_not_found"),
		Message: fmt.Sprintf("The model `%s` does not exist.", name)}
}

// NotFound is a generic 404 (unknown route, unknown adapter on unload).
func NotFound(msg string) *Error {
	return &Error{Status: http.StatusNotFound, Type: "invalid_request_error", Message: msg}
}

// BodyTooLarge is the 413 for a request body over the limit.
func BodyTooLarge(limit int64) *Error {
	return &Error{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error",
		Message: fmt.Sprintf("Request body is larger than the limit of %d bytes.", limit)}
}

// BodyTimeout is the 408 for a request body that did not arrive in time.
func BodyTimeout(limit time.Duration) *Error {
	return &Error{Status: http.StatusRequestTimeout, Type: "invalid_request_error", Code: strp("request_timeout"),
		Message: fmt.Sprintf("The request body did not arrive within %v.", limit)}
}

// QueueFull is the 429 sent when the waiting queue is full.
func QueueFull() *Error {
	return &Error{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: strp("rate_limit_exceeded"),
		Message: "The server is busy: the request queue is full. Retry later."}
}

// ShuttingDown is the 503 sent after shutdown began.
func ShuttingDown() *Error {
	return &Error{Status: http.StatusServiceUnavailable, Type: "server_error", Code: strp("server_shutting_down"),
		Message: "The server is shutting down."}
}

// Internal is a 500 server_error.
func Internal(format string, args ...any) *Error {
	return &Error{Status: http.StatusInternalServerError, Type: "server_error", Message: fmt.Sprintf(format, args...)}
}

// MethodNotAllowed is the 405 for a known path with the wrong method.
func MethodNotAllowed() *Error {
	return &Error{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error", Message: "Method not allowed."}
}
