// Package serve is lorakit's OpenAI-compatible HTTP server: routes, SSE streaming and the translation between
// HTTP requests and engine requests. One file per endpoint; the wire types live in serve/openai, the batching
// engine and adapter registry in serve/engine, and the model behind them (lorakit's models.Model) in serve/backend.
//
// Programmatic use (e.g. `lorakit demo`):
//
//	m, _ := models.Load(dir, models.LoadOptions{})
//	srv, _ := serve.New(serve.Config{Model: backend.FromModel(m), ModelName: "smol", Adapters: map[string]string{"sql": "./sql-lora"}})
//	ln, _ := net.Listen("tcp", "127.0.0.1:0") // a free port: ln.Addr()
//	err := srv.Start(ctx, ln)                 // serves until ctx ends, then drains running requests
package serve

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/lorakit/lorakit/models/grammar"
	"github.com/lorakit/lorakit/models/stop"
	"github.com/lorakit/lorakit/serve/adapterstore"
	"github.com/lorakit/lorakit/serve/engine"
	"github.com/lorakit/lorakit/serve/openai"
)

// Model is what the server needs from a loaded base model (backend.FromModel adapts lorakit's models.Model).
type Model interface {
	engine.Backend
	// Encode tokenizes text (addSpecial: add BOS/EOS as the tokenizer config says).
	Encode(text string, addSpecial bool) []int
	// Decode turns ids into text, skipping special tokens.
	Decode(ids []int) string
	NewDecoder(prompt []int) engine.Decoder
	// TokenText is the vocabulary string of one token (naming special tokens in logprobs).
	TokenText(id int) string
	// TokenBytes is the exact bytes token id adds to the text after other text (nil for special tokens).
	TokenBytes(id int) []byte
	// Pieces is the bytes each of ids contributes to the decoded text, the first as at the start of a text.
	Pieces(ids []int) [][]byte
	// RenderChat renders messages with the model's chat template and the generation prompt; tools (a JSON array
	// or nil) is the tools list; kwargs (a JSON object or nil) are extra template variables such as
	// {"enable_thinking": false}. A template that cannot render tools, tool calls or tool results gives an
	// error wrapping chat.ErrTemplateNoTools.
	RenderChat(msgs []openai.Message, tools, kwargs json.RawMessage) (string, error)
	// SupportsReasoning reports whether the template produces <think>…</think> blocks.
	SupportsReasoning() bool
	// ToolParser names the tool-call format of the template's model (openai.ToolParserHermes,
	// openai.ToolParserLlama3JSON), or "" when it is unknown.
	ToolParser() string
	EOS() []int
	// TurnEnd is the chat template's end of turn: a chat completion stops there (models.Model.TurnEnd).
	TurnEnd() stop.Turn
	NewSampler(engine.SamplingParams) engine.Sampler
	// ContextLen is the model's maximum context (max_position_embeddings).
	ContextLen() int
	// LoadAdapter loads a PEFT adapter folder and checks it against this base model.
	LoadAdapter(path string) (engine.Delta, error)
	// Constrain starts a generation constrained by g over this model's vocabulary.
	Constrain(g *grammar.Grammar) engine.Constraint
}

// Config configures a Server. Zero values take the defaults documented on each field.
type Config struct {
	Model Model
	// Version is what GET /version reports (default: the binary's module version).
	Version string
	// ModelName is the served name of the base model (requests with this `model` use no adapter).
	ModelName string
	// ModelRoot is reported as the base card's root (the model folder).
	ModelRoot string
	// Adapters are loaded at start: name → PEFT folder.
	Adapters map[string]string
	// AdapterDir holds adapters loaded on first use by name; MaxLoadedAdapters bounds them (0 = unlimited).
	AdapterDir          string
	MaxLoadedAdapters   int
	AllowAnyAdapterPath bool
	// ResolveAdapter, if set, turns a lora_path that is not a local folder (a hub id) into one.
	ResolveAdapter func(ctx context.Context, ref string) (string, error)
	// AdapterStore with AdapterURL (s3://BUCKET/PREFIX) serves adapters kept in object storage through a local
	// cache: a request naming NAME loads AdapterURL/NAME on first use (in place of AdapterDir), and lora_path
	// may be an s3:// URL (under AdapterURL, or anywhere with AllowAnyAdapterPath).
	AdapterStore *adapterstore.Store
	AdapterURL   string
	// APIKey, if set, is required as "Authorization: Bearer <key>" on /v1/*.
	APIKey string
	// MaxBatch (default 16) sequences decode together (plus a quarter more for requests with nothing running:
	// engine.Config.MaxBatch); MaxQueue (default 256) wait; beyond that, 429.
	MaxBatch, MaxQueue int
	// MaxModelLen caps prompt + completion (default and upper bound: the model's context).
	MaxModelLen int
	// PrefillChunk is the prompt-token budget per engine step (default 256).
	PrefillChunk int
	// PrefixCache bounds the bytes of prompt-block KV blocks kept for requests sharing a prefix under the same adapter
	// (engine.Config.PrefixCache); 0 turns prefix caching off.
	PrefixCache int64
	// KVCacheMemory is the KV cache budget in bytes, shared by the running sequences in blocks of
	// engine.KVBlockSize positions (engine.Config.KVBlocks; the Model must report KVBytesPerToken); 0: no budget.
	KVCacheMemory int64
	// MaxBodyBytes limits request bodies (default 8 MiB); larger bodies get 413.
	MaxBodyBytes int64
	// MaxN bounds a request's n (default and upper bound 128).
	MaxN int
	// ReadTimeout bounds reading a request's headers, and again its body (default 30 s). WriteTimeout bounds each
	// write of a reply (default 30 s): a client that stops reading a stream is dropped, not waited for.
	// IdleTimeout closes keep-alive connections idle that long (default 60 s).
	ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// MaxConns caps open connections (default 4096); further clients wait in the listen backlog.
	MaxConns int
	// Logger receives one line per request and per adapter load, failure, eviction and unload (nil: none).
	Logger *slog.Logger
	// ShutdownTimeout is how long Start lets running requests finish after its context ends (default 60 s).
	ShutdownTimeout time.Duration
}

// Server is a running lorakit OpenAI-compatible server.
type Server struct {
	cfg      Config
	model    Model
	name     string
	maxLen   int
	eng      *engine.Engine
	reg      *engine.Registry
	echo     *echo.Echo
	metrics  *metrics
	created  int64
	shutting atomic.Bool
	inflight sync.WaitGroup
	http     *http.Server
	mu       sync.Mutex
	grammars grammars
	// admission bounds (admit.go)
	maxN, maxChoices, maxTokBytes int
	memory                        memoryReturner
	privateDirs                   []string
	log                           *slog.Logger
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// New builds a server: loads the startup adapters and starts the engine.
func New(cfg Config) (*Server, error) {
	if cfg.Model == nil {
		return nil, errors.New("serve: Config.Model is required")
	}
	if cfg.ModelName == "" {
		cfg.ModelName = "lorakit"
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 8 << 20
	}
	if cfg.MaxN <= 0 || cfg.MaxN > 128 {
		cfg.MaxN = 128
	}
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = 256
	}
	cfg.ReadTimeout = orDefault(cfg.ReadTimeout, 30*time.Second)
	cfg.WriteTimeout = orDefault(cfg.WriteTimeout, 30*time.Second)
	cfg.IdleTimeout = orDefault(cfg.IdleTimeout, 60*time.Second)
	cfg.ShutdownTimeout = orDefault(cfg.ShutdownTimeout, 60*time.Second)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 4096
	}
	maxLen := cfg.Model.ContextLen()
	if cfg.MaxModelLen > 0 {
		if maxLen > 0 && cfg.MaxModelLen > maxLen {
			return nil, fmt.Errorf("serve: --max-model-len %d exceeds the model's context of %d tokens", cfg.MaxModelLen, maxLen)
		}
		maxLen = cfg.MaxModelLen
	}
	if maxLen <= 0 {
		return nil, fmt.Errorf("serve: the model reports no context length; set --max-model-len")
	}
	s := &Server{cfg: cfg, model: cfg.Model, name: cfg.ModelName, maxLen: maxLen, created: time.Now().Unix(),
		maxN: cfg.MaxN, maxChoices: cfg.MaxQueue, maxTokBytes: maxTokenBytes(cfg.Model)}
	s.memory.delay = time.Second
	s.log = cfg.Logger
	s.privateDirs = privateDirs(cfg)
	s.metrics = newMetrics(cfg.ModelName, s.scrape)
	rc := engine.RegistryConfig{Load: cfg.Model.LoadAdapter, Dir: cfg.AdapterDir,
		MaxLoaded: cfg.MaxLoadedAdapters, AllowAnyPath: cfg.AllowAnyAdapterPath, Observer: adapterEvents{s.metrics, s.log},
		Resolve: s.resolveAdapter}
	if cfg.AdapterStore != nil {
		if cfg.AdapterDir != "" {
			return nil, errors.New("serve: AdapterDir and AdapterStore exclude each other")
		}
		base := strings.TrimRight(cfg.AdapterURL, "/")
		rc.RemotePrefix = base + "/"
		rc.Fetch = func(ctx context.Context, name string) (string, func(), error) {
			dir, release, err := cfg.AdapterStore.Fetch(ctx, base+"/"+name)
			if errors.Is(err, adapterstore.ErrNotFound) {
				err = fmt.Errorf("%w: %v", engine.ErrAdapterNotFound, err)
			}
			return dir, release, err
		}
	}
	reg, err := engine.NewRegistry(rc)
	if err != nil {
		return nil, err
	}
	s.reg = reg
	names := make([]string, 0, len(cfg.Adapters))
	for n := range cfg.Adapters {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if n == cfg.ModelName {
			return nil, fmt.Errorf("serve: adapter name %q is the served model name", n)
		}
		if err := reg.Add(n, cfg.Adapters[n]); err != nil {
			return nil, fmt.Errorf("serve: --adapter %s=%s: %w", n, cfg.Adapters[n], err)
		}
	}
	kvBlocks := 0
	if cfg.KVCacheMemory > 0 {
		kb, ok := cfg.Model.(interface{ KVBytesPerToken() int64 })
		if !ok {
			return nil, errors.New("serve: a KV cache budget needs a model that reports its KV bytes per token")
		}
		kvBlocks = int(cfg.KVCacheMemory / (engine.KVBlockSize * kb.KVBytesPerToken()))
		if kvBlocks*engine.KVBlockSize < maxLen {
			return nil, fmt.Errorf("serve: --kv-cache-memory %d bytes holds %d token positions (%d bytes each), less than one sequence of the %d-token context window: raise it to at least %d bytes or lower --max-model-len",
				cfg.KVCacheMemory, kvBlocks*engine.KVBlockSize, kb.KVBytesPerToken(), maxLen, int64(maxLen)*kb.KVBytesPerToken())
		}
	}
	eng, err := engine.New(engine.Config{Backend: cfg.Model, NewDecoder: cfg.Model.NewDecoder, NewSampler: cfg.Model.NewSampler,
		EOS: cfg.Model.EOS(), TurnEnd: cfg.Model.TurnEnd(), MaxBatch: cfg.MaxBatch, MaxQueue: cfg.MaxQueue, MaxModelLen: maxLen,
		PrefillChunk: cfg.PrefillChunk, PrefixCache: cfg.PrefixCache, KVBlocks: kvBlocks, Observer: s.metrics})
	if err != nil {
		return nil, err
	}
	s.eng = eng
	s.echo = s.routes()
	return s, nil
}

// resolveAdapter finds a lora_path that is not a local folder: an s3:// URL through the adapter store, anything
// else through Config.ResolveAdapter.
func (s *Server) resolveAdapter(ctx context.Context, ref string) (string, func(), error) {
	if strings.HasPrefix(ref, "s3://") {
		if s.cfg.AdapterStore == nil {
			return "", nil, fmt.Errorf("%s: s3:// adapters need the server started with --adapter-dir s3://... (its cache)", ref)
		}
		return s.cfg.AdapterStore.Fetch(ctx, ref)
	}
	if s.cfg.ResolveAdapter == nil {
		return "", nil, fmt.Errorf("%s: no such folder", ref)
	}
	dir, err := s.cfg.ResolveAdapter(ctx, ref)
	return dir, func() {}, err
}

// Handler is the server's HTTP handler (for httptest).
func (s *Server) Handler() http.Handler { return s.echo }

// Registry is the adapter registry.
func (s *Server) Registry() *engine.Registry { return s.reg }

// Start serves on ln until ctx ends, then drains in-flight requests (at most ShutdownTimeout) and returns.
// At most MaxConns connections are open at once; headers must arrive within ReadTimeout and idle keep-alive
// connections close after IdleTimeout (the body and write deadlines are set per request: see deadlineMW).
func (s *Server) Start(ctx context.Context, ln net.Listener) error {
	ln = newLimitListener(ln, s.cfg.MaxConns)
	srv := &http.Server{Handler: s.echo, ReadHeaderTimeout: s.cfg.ReadTimeout, IdleTimeout: s.cfg.IdleTimeout,
		MaxHeaderBytes: 64 << 10}
	s.mu.Lock()
	s.http = srv
	s.mu.Unlock()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		s.close()
		return err
	case <-ctx.Done():
	}
	dctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	return s.Shutdown(dctx)
}

// Shutdown refuses new requests with 503 and lets running ones finish until ctx ends. Then it cuts what is
// left: every cut stream still gets an error event (server_shutting_down) and [DONE], a waiting non-streamed
// request a 503; a client that does not read is dropped after WriteTimeout. It returns nil once every request
// has ended one way or the other (a cut is the deadline doing its job, not a failure).
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutting.Store(true)
	if err := s.eng.Shutdown(ctx); err != nil {
		st := s.eng.Stats()
		s.log.Warn("shutdown: requests cut at the deadline", "waiting", st.Waiting, "running", st.Active)
	}
	// The engine has ended every request; the handlers now write their last events, each write bounded.
	grace := s.cfg.WriteTimeout + time.Second
	done := make(chan struct{})
	go func() { s.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		s.log.Warn("shutdown: handlers still writing after the grace period; closing their connections", "grace", grace)
	}
	s.mu.Lock()
	srv := s.http
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return srv.Close()
	}
	return nil
}

func (s *Server) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = s.eng.Shutdown(ctx)
}

func (s *Server) routes() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		var oe *openai.Error
		var he *echo.HTTPError
		switch {
		case errors.Is(err, context.Canceled):
			return // the client went away; nobody reads a reply
		case errors.As(err, &oe):
		case errors.As(err, &he):
			switch he.Code {
			case http.StatusNotFound:
				oe = openai.NotFound(fmt.Sprintf("Route %s %s not found.", c.Request().Method, c.Request().URL.Path))
			case http.StatusMethodNotAllowed:
				oe = openai.MethodNotAllowed()
			case http.StatusRequestEntityTooLarge:
				oe = openai.BodyTooLarge(s.cfg.MaxBodyBytes)
			default:
				oe = &openai.Error{Status: he.Code, Type: "invalid_request_error", Message: fmt.Sprint(he.Message)}
			}
		default:
			oe = openai.Internal("%v", err)
		}
		_ = writeJSON(c, oe.Status, openai.ErrorResponse{Error: oe})
	}
	e.Use(s.deadlineMW, s.recoverMW, s.countMW, s.shutdownMW, s.authMW, s.bodyLimitMW)
	e.POST("/v1/chat/completions", s.handleChat)
	e.POST("/v1/completions", s.handleCompletions)
	e.GET("/v1/models", s.handleModels)
	e.GET("/v1/models/:model", s.handleModel)
	e.POST("/v1/load_lora_adapter", s.handleLoadLoRA)
	e.POST("/v1/unload_lora_adapter", s.handleUnloadLoRA)
	e.POST("/tokenize", s.handleTokenize)
	e.POST("/detokenize", s.handleDetokenize)
	e.GET("/version", s.handleVersion)
	e.GET("/health", s.handleHealth)
	e.GET("/metrics", s.handleMetrics)
	return e
}

// ctxWriteTimeout is the echo.Context key of the per-write deadline (see writeDeadline).
const ctxWriteTimeout = "lorakit.writeTimeout"

// deadlineMW gives a request with a body ReadTimeout to send it: a client that sends headers and then nothing is
// answered and dropped, also when the handler never reads the body (a 401, a 404). readBody lifts the deadline
// once the body is in, so a long reply is not cut. Writes get their own deadline (writeDeadline).
func (s *Server) deadlineMW(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		c.Set(ctxWriteTimeout, s.cfg.WriteTimeout)
		if r := c.Request(); r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
			_ = http.NewResponseController(c.Response()).SetReadDeadline(time.Now().Add(s.cfg.ReadTimeout))
		}
		return next(c)
	}
}

// writeDeadline gives the next write of c's reply WriteTimeout to go through.
func writeDeadline(c echo.Context) {
	if d, ok := c.Get(ctxWriteTimeout).(time.Duration); ok && d > 0 {
		_ = http.NewResponseController(c.Response()).SetWriteDeadline(time.Now().Add(d))
	}
}

func (s *Server) recoverMW(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = openai.Internal("internal error: %v", r)
			}
		}()
		return next(c)
	}
}

func (s *Server) countMW(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		t0 := time.Now()
		err := next(c)
		status := c.Response().Status
		if err != nil {
			var oe *openai.Error
			var he *echo.HTTPError
			if errors.Is(err, context.Canceled) {
				status = statusClientClosed
			} else if errors.As(err, &oe) {
				status = oe.Status
			} else if errors.As(err, &he) {
				status = he.Code
			} else {
				status = http.StatusInternalServerError
			}
		}
		s.metrics.request(c.Path(), status)
		if c.Path() != "/health" && c.Path() != "/metrics" { // probes would drown the log
			s.logRequest(c, status, time.Since(t0))
		}
		return err
	}
}

// errClientGone ends a streamed reply whose client went away.
var errClientGone = fmt.Errorf("the client closed the connection: %w", context.Canceled)

// statusClientClosed is nginx's 499, counted in /metrics for requests whose client disconnected.
const statusClientClosed = 499

func (s *Server) shutdownMW(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if s.shutting.Load() && c.Path() != "/metrics" {
			return openai.ShuttingDown()
		}
		s.inflight.Add(1)
		defer s.inflight.Done()
		return next(c)
	}
}

func (s *Server) authMW(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		p := c.Request().URL.Path
		if s.cfg.APIKey == "" || !(strings.HasPrefix(p, "/v1/") || p == "/tokenize" || p == "/detokenize") {
			return next(c)
		}
		scheme, key, _ := strings.Cut(strings.TrimSpace(c.Request().Header.Get("Authorization")), " ")
		// The scheme is case-insensitive (RFC 9110 §11.1); the token is compared in constant time.
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(key)), []byte(s.cfg.APIKey)) != 1 {
			h := c.Response().Header()
			h.Set("WWW-Authenticate", `Bearer realm="lorakit"`)
			// Reply without reading the body: closing the connection spares waiting for a body nobody will use.
			h.Set("Connection", "close")
			return openai.Unauthorized()
		}
		return next(c)
	}
}

func (s *Server) bodyLimitMW(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if r.ContentLength > s.cfg.MaxBodyBytes {
			return openai.BodyTooLarge(s.cfg.MaxBodyBytes)
		}
		r.Body = http.MaxBytesReader(c.Response(), r.Body, s.cfg.MaxBodyBytes)
		return next(c)
	}
}

// readBody reads the request body (within ReadTimeout, see deadlineMW), mapping an over-limit body to 413 and a
// body that did not arrive in time to 408. A large body's memory is handed back to the OS after the request.
func (s *Server) readBody(c echo.Context) ([]byte, error) {
	r := c.Request()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		var ne net.Error
		switch {
		case errors.As(err, &mbe):
			return nil, openai.BodyTooLarge(s.cfg.MaxBodyBytes)
		case errors.As(err, &ne) && ne.Timeout():
			c.Response().Header().Set("Connection", "close")
			return nil, openai.BodyTimeout(s.cfg.ReadTimeout)
		}
		return nil, openai.BadRequest("", "could not read the request body: %v", err)
	}
	_ = http.NewResponseController(c.Response()).SetReadDeadline(time.Time{})
	if size := int64(len(b)); size >= 1<<20 {
		c.Response().After(func() { s.memory.after(size) })
	}
	return b, nil
}

// lease resolves the `model` field: the base (nil lease) or an adapter.
func (s *Server) lease(ctx context.Context, model string) (*engine.Lease, error) {
	if model == s.name {
		return nil, nil
	}
	l, err := s.reg.Acquire(ctx, model)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return nil, err // the client went away while the adapter loaded
		}
		if errors.Is(err, engine.ErrAdapterNotFound) {
			return nil, openai.ModelNotFound(model)
		}
		return nil, openai.BadRequest("model", "adapter %q could not be loaded: %s", model, s.redact(err))
	}
	return l, nil
}

// redact is err's message without the server's own directories (the adapter dir, the model folder, the working
// directory): a client learns what is wrong with the adapter, not where the server keeps its files.
func (s *Server) redact(err error) string {
	msg := err.Error()
	for _, d := range s.privateDirs {
		msg = strings.ReplaceAll(msg, d+string(filepath.Separator), "")
		msg = strings.ReplaceAll(msg, d, ".")
	}
	return msg
}

// privateDirs lists the absolute directories redact removes, longest first.
func privateDirs(cfg Config) []string {
	var out []string
	for _, d := range []string{cfg.AdapterDir, cfg.ModelRoot, "."} {
		if d == "" {
			continue
		}
		if a, err := filepath.Abs(d); err == nil && a != string(filepath.Separator) {
			out = append(out, a)
			if e, err := filepath.EvalSymlinks(a); err == nil && e != a {
				out = append(out, e)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// submitError maps an engine.Submit error to an OpenAI error; param names where the prompt came from.
func submitError(err error, param string) error {
	var ce *engine.ContextError
	switch {
	case errors.As(err, &ce):
		return openai.ContextTooLong(param, ce.MaxLen, ce.Prompt, ce.Completion)
	case errors.Is(err, engine.ErrQueueFull):
		return openai.QueueFull()
	case errors.Is(err, engine.ErrShuttingDown):
		return openai.ShuttingDown()
	case errors.Is(err, engine.ErrEmptyPrompt):
		return openai.BadRequest("prompt", "the prompt is empty after tokenization")
	default:
		return openai.BadRequest("", "%v", err)
	}
}

func newID(prefix string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}
