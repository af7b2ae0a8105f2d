package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lorakit/lorakit/internal/progress"
	"github.com/lorakit/lorakit/models/hub"
)

// hubSettings reads the Hugging Face environment the way huggingface_hub does: HF_ENDPOINT; the token from
// HF_TOKEN, else the file HF_TOKEN_PATH, else $HF_HOME/token; the cache at HF_HUB_CACHE, else $HF_HOME/hub, where
// HF_HOME defaults to $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface; HF_HUB_OFFLINE=1 forbids downloads.
func hubSettings(cmd *cobra.Command) hub.ResolveOptions {
	home := os.Getenv("HF_HOME")
	if home == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			if h, err := os.UserHomeDir(); err == nil {
				base = filepath.Join(h, ".cache")
			}
		}
		home = filepath.Join(base, "huggingface")
	}
	cache := os.Getenv("HF_HUB_CACHE")
	if cache == "" {
		cache = os.Getenv("HUGGINGFACE_HUB_CACHE") // the older name huggingface_hub still reads
	}
	if cache == "" {
		cache = filepath.Join(home, "hub")
	}
	token := strings.TrimSpace(os.Getenv("HF_TOKEN"))
	if token == "" {
		p := os.Getenv("HF_TOKEN_PATH")
		if p == "" {
			p = filepath.Join(home, "token")
		}
		if b, err := os.ReadFile(p); err == nil {
			token = strings.TrimSpace(string(b))
		}
	}
	o := hub.ResolveOptions{Cache: hub.Cache{Dir: cache}, Offline: envTrue("HF_HUB_OFFLINE")}
	o.Endpoint, o.Token = os.Getenv("HF_ENDPOINT"), token
	o.Progress = downloadProgress(cmd)
	return o
}

// envTrue is huggingface_hub's reading of a boolean variable.
func envTrue(name string) bool {
	switch strings.ToLower(strings.TrimSpace(os.Getenv(name))) {
	case "1", "on", "yes", "true":
		return true
	}
	return false
}

// downloadProgress shows one bar per file on stderr.
func downloadProgress(cmd *cobra.Command) func(file string, done, total int64) {
	var bar *progress.Bar
	var cur string
	return func(file string, done, total int64) {
		if file != cur {
			if bar != nil {
				bar.Finish()
			}
			cur, bar = file, progress.New(cmd.ErrOrStderr(), file, total, "B")
		}
		bar.Set(done, "")
		if done >= total {
			bar.Finish()
			bar, cur = nil, ""
		}
	}
}

// resolveRef is the one place a command turns a --model, --adapter or input argument into a local folder: an
// existing path as it is, ORG/NAME[@REV] through the Hugging Face cache (downloaded when missing and allowed).
// flag names the flag or argument for the error.
func resolveRef(cmd *cobra.Command, flag, s string) (hub.Resolved, error) {
	if s == "" {
		return hub.Resolved{}, nil
	}
	r, err := hub.Resolve(cmd.Context(), s, hubSettings(cmd))
	if err != nil {
		return r, fmt.Errorf("%s: %w", flag, err)
	}
	return r, nil
}

// resolveDir is resolveRef for callers that need only the folder.
func resolveDir(cmd *cobra.Command, flag, s string) (string, error) {
	r, err := resolveRef(cmd, flag, s)
	return r.Dir, err
}
