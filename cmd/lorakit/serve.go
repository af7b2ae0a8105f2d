package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/hub"
	"github.com/lorakit/lorakit/serve"
	"github.com/lorakit/lorakit/serve/adapterstore"
	"github.com/lorakit/lorakit/serve/backend"
)

func init() { register(newServeCmd) }

func newServeCmd() *cobra.Command {
	var (
		modelDir, adapterDir, quantType, headType, host, apiKey, servedName string
		adapterCache, adapterCacheSize, prefixCacheSize, kvCacheMemory      string
		kvCacheDType                                                        string
		prefixCaching                                                       bool
		adapterDType                                                        string
		adapters                                                            []string
		port, maxLoaded, maxBatch, maxQueue, maxModelLen, threads           int
		prefillChunk, maxN, maxConns                                        int
		readTimeout, writeTimeout, idleTimeout, shutdownTimeout             time.Duration
		logFormat, cpuprofile                                               string
		allowAnyPath                                                        bool
	)
	cmd := &cobra.Command{
		Use:   "serve --model DIR [--adapter NAME=DIR ...] [--adapter-dir DIR] [--port 8080]",
		Short: "Serve a model and many LoRA adapters over an OpenAI-compatible HTTP API",
		Long: `Serve loads one base model (f32, bf16, or NF4 with --quant nf4) and any number of LoRA adapters beside it
and answers the OpenAI API: POST /v1/chat/completions, POST /v1/completions, GET /v1/models. The request's
"model" field picks the adapter by name (the base model's name is --served-model-name, default the folder
name). Requests for different adapters are decoded together in one batch (continuous batching).

Adapters: --adapter NAME=DIR at start; POST /v1/load_lora_adapter {"lora_name","lora_path"} and
/v1/unload_lora_adapter {"lora_name"} at run time (vLLM's API; loading an existing name replaces it, unloading
waits for requests still using it); with --adapter-dir, a request naming a sub-folder loads it on first use and
the least recently used are evicted beyond --max-loaded-adapters. Runtime loads are limited to --adapter-dir
and the --adapter paths unless --allow-any-adapter-path.

Also GET /health and GET /metrics (Prometheus). --api-key requires "Authorization: Bearer KEY" on /v1/*.
SIGINT/SIGTERM stop accepting requests (503) and let the running ones finish for --shutdown-timeout; streams
still running then end with a server_shutting_down error event and [DONE], and serve exits 0.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if modelDir == "" {
				return errors.New("serve: --model DIR is required")
			}
			logger, err := newLogger(cmd.ErrOrStderr(), logFormat)
			if err != nil {
				return err
			}
			if port < 0 || port > 65535 {
				return fmt.Errorf("serve: --port %d is out of range", port)
			}
			if cpuprofile != "" { // before the model loads (startProfile checks again when it starts)
				if err := checkProfilePath(cpuprofile); err != nil {
					return fmt.Errorf("serve: %w", err)
				}
			}
			named := map[string]string{}
			for _, a := range adapters {
				name, dir, ok := strings.Cut(a, "=")
				if !ok || name == "" || dir == "" {
					return fmt.Errorf("serve: --adapter %q must be NAME=DIR", a)
				}
				if _, dup := named[name]; dup {
					return fmt.Errorf("serve: --adapter name %q given twice", name)
				}
				r, err := resolveRef(cmd, "--adapter "+name, dir)
				if err != nil {
					return fmt.Errorf("serve: %w", err)
				}
				named[name] = r.Dir
			}
			base, err := resolveRef(cmd, "--model", modelDir)
			if err != nil {
				return fmt.Errorf("serve: %w", err)
			}
			modelDir = base.Dir
			var prefixBytes int64
			if prefixCaching {
				n, err := parseSize(prefixCacheSize)
				if err != nil || n <= 0 {
					return fmt.Errorf("serve: --prefix-cache-size %q: want a positive size such as 1GiB or 500MB", prefixCacheSize)
				}
				prefixBytes = n
			}
			var kvBytes int64
			if kvCacheMemory != "" {
				if kvBytes, err = parseSize(kvCacheMemory); err != nil || kvBytes <= 0 {
					return fmt.Errorf("serve: --kv-cache-memory %q: want a positive size such as 2GiB or 500MB", kvCacheMemory)
				}
			}
			m, err := models.Load(modelDir, models.LoadOptions{Threads: threads, Quant: quantType, Head: headType, Compact: true})
			if err != nil {
				return err
			}
			defer m.Close()
			if servedName == "" {
				servedName = filepath.Base(filepath.Clean(modelDir))
				if base.Ref != nil {
					servedName = path.Base(base.Ref.Repo) // not the snapshot's commit hash
				}
			}
			be, err := backend.FromModelOptions(m, backend.Options{AdapterDType: adapterDType, KVCacheDType: kvCacheDType})
			if err != nil {
				return fmt.Errorf("serve: --adapter-dtype / --kv-cache-dtype: %w", err)
			}
			var store *adapterstore.Store
			adapterURL := ""
			if strings.HasPrefix(adapterDir, "s3://") {
				if store, err = openAdapterStore(cmd.Context(), adapterCache, adapterCacheSize); err != nil {
					return fmt.Errorf("serve: %w", err)
				}
				adapterURL, adapterDir = adapterDir, ""
			}
			srv, err := serve.New(serve.Config{Model: be, ModelName: servedName, ModelRoot: modelDir,
				AdapterStore: store, AdapterURL: adapterURL,
				Adapters: named, AdapterDir: adapterDir, MaxLoadedAdapters: maxLoaded, AllowAnyAdapterPath: allowAnyPath,
				ResolveAdapter: func(ctx context.Context, ref string) (string, error) {
					o := hubSettings(cmd)
					o.Progress = nil // no bars from a server
					r, err := hub.Resolve(ctx, ref, o)
					return r.Dir, err
				},
				APIKey: apiKey, MaxBatch: maxBatch, MaxQueue: maxQueue, MaxModelLen: maxModelLen, PrefillChunk: prefillChunk,
				PrefixCache: prefixBytes, KVCacheMemory: kvBytes,
				MaxN: maxN, MaxConns: maxConns, ReadTimeout: readTimeout, WriteTimeout: writeTimeout, IdleTimeout: idleTimeout,
				ShutdownTimeout: shutdownTimeout, Logger: logger})
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
			if err != nil {
				if errors.Is(err, syscall.EADDRINUSE) {
					return fmt.Errorf("serve: %w: another program is listening on %s; pick another with --port (or --port 0 for any free port)", err, net.JoinHostPort(host, strconv.Itoa(port)))
				}
				return fmt.Errorf("serve: listen on --host %s --port %d: %w", host, port, err)
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			stopProfile, err := startProfile(cpuprofile)
			if err != nil {
				return fmt.Errorf("serve: %w", err)
			}
			defer stopProfile()
			fmt.Fprintf(cmd.ErrOrStderr(), "lorakit serve: model %q with %d adapter(s) on http://%s (Ctrl-C to stop)\n",
				servedName, srv.Registry().Len(), ln.Addr())
			err = srv.Start(ctx, ln)
			fmt.Fprintln(cmd.ErrOrStderr(), "lorakit serve: stopped")
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&modelDir, "model", "", "base model folder (Hugging Face layout)")
	f.StringArrayVar(&adapters, "adapter", nil, "load adapter NAME=DIR at start (repeatable)")
	f.StringVar(&adapterDir, "adapter-dir", "", "folder, or s3://BUCKET/PREFIX, of adapters loaded on first use by name")
	f.StringVar(&adapterCache, "adapter-cache", "", "local cache of adapters from s3:// (default: the user cache folder's lorakit/adapters)")
	f.StringVar(&adapterCacheSize, "adapter-cache-size", "10GiB", "bound of --adapter-cache; least recently used adapters are removed beyond it")
	f.BoolVar(&prefixCaching, "enable-prefix-caching", true, "reuse the KV of prompt prefixes (16-token blocks) that earlier requests with the same adapter computed; outputs are the same either way")
	f.StringVar(&prefixCacheSize, "prefix-cache-size", "1GiB", "bound of the KV blocks the prefix cache keeps (shared by reference with the sequences using them); least recently used blocks no sequence holds are dropped beyond it")
	f.StringVar(&kvCacheMemory, "kv-cache-memory", "", "KV cache budget shared by the running sequences, in blocks of 16 positions (keys and values in --kv-cache-dtype): a request waits until its prompt's blocks are free, and when decoding runs out the most recently admitted sequence is preempted and later recomputed (outputs unchanged); vllm:kv_cache_usage_perc reports the blocks in use. Empty: no budget (each sequence may hold its prompt + max tokens)")
	f.IntVar(&maxLoaded, "max-loaded-adapters", 0, "evict least recently used adapters from --adapter-dir beyond this many loaded (0: no limit)")
	f.BoolVar(&allowAnyPath, "allow-any-adapter-path", false, "let /v1/load_lora_adapter read adapters from any path")
	f.StringVar(&quantType, "quant", "", `quantise the base at load: "nf4" or "fp4"`)
	f.StringVar(&headType, "head", "auto", headUsage)
	f.StringVar(&host, "host", "127.0.0.1", "address to listen on")
	f.IntVar(&port, "port", 8080, "port to listen on (0: any free port)")
	f.StringVar(&apiKey, "api-key", "", "require this bearer token on /v1/*")
	f.IntVar(&maxBatch, "max-batch", 16, "sequences decoded together (plus up to a quarter more for requests with nothing running yet, so short requests are not stuck behind long ones)")
	f.IntVar(&maxQueue, "max-queue", 256, "requests waiting for a slot before 429")
	f.IntVar(&maxModelLen, "max-model-len", 0, "context window: prompt + completion tokens (0: the model's max_position_embeddings)")
	f.StringVar(&servedName, "served-model-name", "", "name of the base model in the API (default: the model folder's name)")
	f.IntVar(&threads, "threads", 0, "kernel threads (0: all CPUs)")
	f.StringVar(&kvCacheDType, "kv-cache-dtype", "auto", `KV cache element type: "f32", "bf16", or "auto" (f32 for an f32 base, else bf16: half the memory and the bytes attention reads; logits move by the bf16 rounding of keys and values)`)
	f.StringVar(&adapterDType, "adapter-dtype", "auto", `adapter weight storage: "f32", "bf16", or "auto" (f32 for an f32 base, else bf16)`)
	f.IntVar(&maxN, "max-n", 128, "largest n (choices per request) accepted")
	f.IntVar(&maxConns, "max-connections", 4096, "open connections at most; more wait in the listen backlog")
	f.DurationVar(&readTimeout, "read-timeout", 30*time.Second, "time a client has to send a request's headers, and again its body")
	f.DurationVar(&writeTimeout, "write-timeout", 30*time.Second, "time each write of a reply may take: a client that stops reading is dropped")
	f.DurationVar(&idleTimeout, "idle-timeout", 60*time.Second, "close keep-alive connections idle this long")
	f.DurationVar(&shutdownTimeout, "shutdown-timeout", 60*time.Second, "on SIGINT/SIGTERM, time running requests get to finish before they are cut (each cut stream still ends with an error event and [DONE]); then exit 0")
	f.StringVar(&logFormat, "log-format", "text", `request and adapter log lines on stderr: "text" or "json"`)
	f.StringVar(&cpuprofile, "cpuprofile", "", "write a CPU profile of the whole time the server listens to this file (written when it stops: SIGINT/SIGTERM)")
	f.IntVar(&prefillChunk, "prefill-chunk", 256, "prompt tokens prefilled per engine step (a long prompt never stalls decoding longer than this)")
	return cmd
}

// newLogger is serve's structured log (one line per request and adapter event) on w.
func newLogger(w io.Writer, format string) (*slog.Logger, error) {
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, nil)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, nil)), nil
	}
	return nil, fmt.Errorf("serve: --log-format %q is not one of text, json", format)
}
