// Package engine is lorakit's continuous-batching inference engine and adapter registry. One goroutine owns the
// model and every KV cache; each step it admits waiting requests (prefilling long prompts in chunks), then runs
// one Forward call holding a decode row for every active sequence, rows with different adapters side by side.
// It knows nothing of HTTP or JSON.
package engine

import "errors"

// Delta is an adapter as the Backend loaded it (Backend.LoadAdapter): the engine only carries it from a Request
// to the rows it hands to Forward. The model groups the rows that share one (models/llama.Delta).
type Delta any

// State is one sequence's opaque KV cache.
type State interface {
	Len() int
}

// PagedBackend is a Backend whose sequences keep their KV in blocks of KVBlockSize positions from one pool,
// shared by reference between sequences (prefix caching) and bounded by the KV budget (Config.KVBlocks).
type PagedBackend interface {
	// KVPool returns a pool of at most blocks blocks (0: no bound) for one engine.
	KVPool(blocks int) (BlockPool, error)
}

// BlockPool is a PagedBackend's pool of KV blocks. Its methods may be called from several goroutines.
type BlockPool interface {
	// NewState returns an empty PagedState for up to maxLen tokens, holding no block yet.
	NewState(maxLen int) State
	// Free is the number of blocks that can still be taken; Used the number some state or share holds.
	Free() int
	Used() int
}

// PagedState is a State of a BlockPool.
type PagedState interface {
	State
	// Blocks is the number of blocks the state holds.
	Blocks() int
	// Reserve makes the state hold the blocks n positions fill; on error (too few free) it holds what it held.
	Reserve(n int) error
	// Release returns the state's blocks (a shared block when its last holder lets go) and empties it.
	Release()
}

// Row is one sequence's share of a Forward call.
type Row struct {
	Tokens  []int
	State   State
	Adapter Delta // nil = base model
	// AllLogits asks for the logits of every new position (prompt logprobs), returned one after another in the
	// row's logits slice; a backend that returns only the last position's leaves the prompt without logprobs.
	AllLogits bool
}

// Backend is the model as the engine sees it. Only the engine goroutine calls it.
type Backend interface {
	// NewState allocates a KV cache for up to maxLen tokens.
	NewState(maxLen int) State
	// Forward appends each row's tokens to its state and returns the logits of each row's last position (of every
	// new position for a row with AllLogits). They are valid until the next Forward: a backend may reuse their
	// memory.
	Forward(rows []Row) ([][]float32, error)
	VocabSize() int
	// Logprobs is log softmax(logits)[id] with the top most likely tokens and theirs (models/sample.Logprobs).
	Logprobs(logits []float32, id, top int) TokenLogprob
}

// Decoder turns a token stream into text, returning only complete UTF-8.
type Decoder interface {
	Add(id int) string
	Flush() string
}

// Sampler picks the next token.
type Sampler interface {
	Sample(logits []float32, history []int) int
}

// Constraint restricts what one request may generate (structured outputs): the engine masks the logits before
// sampling and reports each sampled token. It knows nothing of what the constraint encodes. A Constraint is
// used by one goroutine at a time.
type Constraint interface {
	// Mask sets the logits of the tokens that may not come next to -Inf (end-of-sequence ids included while the
	// output is incomplete) and reports how many tokens remain allowed.
	Mask(logits []float32) int
	// AcceptToken advances past a sampled token; false if it was not allowed.
	AcceptToken(id int) bool
	// Done reports that the output is complete and nothing but end-of-sequence may follow.
	Done() bool
}

// SamplingParams are per-request sampling settings (temperature 0 = greedy).
type SamplingParams struct {
	Temperature, TopP, MinP                              float32
	TopK                                                 int
	RepetitionPenalty, PresencePenalty, FrequencyPenalty float32
	Seed                                                 int64
}

// Errors returned by Submit.
var (
	ErrQueueFull      = errors.New("engine: request queue is full")
	ErrShuttingDown   = errors.New("engine: shutting down")
	ErrEmptyPrompt    = errors.New("engine: empty prompt")
	ErrContextTooLong = errors.New("engine: prompt and completion exceed the context window")
	ErrCancelled      = errors.New("engine: request cancelled")
	// ErrNonFinite ends a request whose logits hold NaN or +Inf.
	ErrNonFinite = errors.New("the model produced non-finite logits (NaN or Inf); the adapter's weights may be corrupt")
)

// ContextError details ErrContextTooLong.
type ContextError struct {
	MaxLen, Prompt, Completion int
}

func (e *ContextError) Error() string {
	return "engine: prompt and completion exceed the context window"
}

// Is makes errors.Is(err, ErrContextTooLong) true.
func (e *ContextError) Is(target error) bool { return target == ErrContextTooLong }

// Request is one generation.
type Request struct {
	Prompt    []int
	MaxTokens int // 0 = until the context window is full
	Sampling  SamplingParams
	Stop      []string
	LogitBias map[int]float32
	// Logprobs asks for each token's log probability and the TopLogprobs best alternatives; PromptLogprobs
	// for those of the prompt's tokens too (echo), given once on the first event.
	Logprobs       bool
	TopLogprobs    int
	PromptLogprobs bool
	Adapter        Delta
	// AdapterName is the served name of Adapter ("" for the base model): Stats and the Observer report it.
	AdapterName string
	// Constraint, if set, limits the output (masking composes with every sampling setting, stop strings and
	// logprobs, which stay those of the model's distribution); the generation ends with "stop" as soon as the
	// output is complete and nothing else may follow, and at an end-of-sequence token even with IgnoreEOS.
	Constraint Constraint
	// IgnoreEOS keeps generating past EOS ids (benchmarks; vLLM's ignore_eos).
	IgnoreEOS bool
	// Chat marks a prompt rendered by the chat template with the generation prompt: it also ends at the
	// template's end of turn (Config.TurnEnd), even with IgnoreEOS, as generate --chat and eval do.
	Chat bool
	// Group names the client request this is one choice of (any comparable value; nil: the request alone): the
	// engine shares the batch fairly between groups, so one request's n choices cannot starve the others.
	Group any
	// Release, if set, is called exactly once when the engine no longer uses the request (finished, cancelled or
	// rejected); serving uses it to drop the adapter reference.
	Release func()
}

// TokenLogprob is one generated token with its log probability.
type TokenLogprob struct {
	ID      int
	Logprob float32
	Top     []TopLogprob
}

// TopLogprob is an alternative token.
type TopLogprob struct {
	ID      int
	Logprob float32
}

// Finish reasons.
const (
	FinishStop   = "stop"
	FinishLength = "length"
	FinishError  = "error"
	FinishCancel = "cancelled"
)

// Event is what a request's stream yields: new text, and on the last event the finish reason and counts.
type Event struct {
	Text   string
	Tokens []TokenLogprob // only when Logprobs was asked for
	// Prompt holds, on the first event of a request with PromptLogprobs, the log probability of each prompt token
	// after the first (entry i is token i+1's).
	Prompt []TokenLogprob
	// Set on the last event only:
	Finish           string
	Err              error
	PromptTokens     int
	CompletionTokens int
}
