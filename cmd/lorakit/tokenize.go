package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/chat"
	"github.com/lorakit/lorakit/models/tokenizer"
)

func init() { register(newTokenizeCmd) }

func newTokenizeCmd() *cobra.Command {
	var (
		dir, modelDir        string
		noSpecial, jsonl, ch bool
		asJSON               bool
	)
	cmd := &cobra.Command{
		Use:   "tokenize --tokenizer DIR [--no-special] TEXT",
		Short: "Print the token ids of a text (or of JSONL texts / chat conversations) as a JSON array",
		Long: `Tokenize encodes TEXT with the tokenizer.json (+ tokenizer_config.json) in DIR and prints the ids as a
JSON array. Special tokens (usually BOS) are added as transformers' add_special_tokens=True does, unless
--no-special is given. Without TEXT, the whole of stdin is the text.

--jsonl reads {"text": ...} lines from stdin and writes {"ids": [...]} lines.
--jsonl --chat reads {"messages": [...], "add_generation_prompt": bool, ...} lines, renders them with the
chat template of tokenizer_config.json (other keys, e.g. "tools" or "enable_thinking", become template
variables) and writes {"text": rendered, "ids": [...]} with the rendered text encoded without adding special
tokens, as apply_chat_template(tokenize=True) does.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				dir = modelDir
			}
			if dir == "" {
				return errors.New("tokenize: --tokenizer DIR (or --model DIR) is required")
			}
			var err error
			if dir, err = resolveDir(cmd, "--tokenizer", dir); err != nil {
				return err
			}
			if ch && !jsonl {
				return errors.New("tokenize: --chat needs --jsonl")
			}
			if jsonl && len(args) > 0 {
				return errors.New("tokenize: --jsonl reads stdin; do not pass TEXT")
			}
			var tok *tokenizer.Tokenizer
			if fi, err := os.Stat(dir); err == nil && !fi.IsDir() && strings.EqualFold(filepath.Ext(dir), ".gguf") {
				g, err := models.OpenGGUF(dir) // a llama.cpp model file: the tokenizer rebuilt from its metadata
				if err != nil {
					return err
				}
				if tok, err = g.Tokenizer(); err != nil {
					return err
				}
			} else {
				if err == nil && !fi.IsDir() {
					dir = filepath.Dir(dir) // a path to tokenizer.json itself
				}
				if tok, err = tokenizer.Load(dir); err != nil {
					return err
				}
			}
			out := bufio.NewWriter(cmd.OutOrStdout())
			defer out.Flush()
			enc := json.NewEncoder(out)
			enc.SetEscapeHTML(false)
			if !jsonl {
				var text string
				if len(args) == 1 {
					text = args[0]
				} else {
					b, err := io.ReadAll(cmd.InOrStdin())
					if err != nil {
						return fmt.Errorf("tokenize: read stdin: %w", err)
					}
					text = string(b)
				}
				return enc.Encode(nonNil(tok.Encode(text, !noSpecial)))
			}
			var tpl *chat.Template
			if ch {
				cfg := tok.Config()
				if tpl, err = chat.New(cfg.ChatTemplate, cfg.BOSToken, cfg.EOSToken); err != nil {
					return fmt.Errorf("tokenize: %s: %w", dir, err)
				}
			}
			return tokenizeJSONL(cmd.InOrStdin(), enc, out, cmd.ErrOrStderr(), tok, tpl, !noSpecial)
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "tokenizer", "", "folder holding tokenizer.json (+ tokenizer_config.json)")
	f.StringVar(&modelDir, "model", "", "alias of --tokenizer")
	f.BoolVar(&noSpecial, "no-special", false, "do not add special tokens (add_special_tokens=False)")
	f.BoolVar(&jsonl, "jsonl", false, `read {"text": ...} lines from stdin, write {"ids": [...]} lines`)
	f.BoolVar(&ch, "chat", false, `with --jsonl: read {"messages": [...], "add_generation_prompt": bool} lines`)
	f.BoolVar(&asJSON, "json", false, "output is always JSON; accepted for uniformity")
	return cmd
}

func nonNil(ids []int) []int {
	if ids == nil {
		return []int{}
	}
	return ids
}

// tokenizeJSONL processes stdin line by line. A bad line (invalid JSON, a template error) is written as
// {"error": "..."} so output lines stay aligned with input lines; the command then exits with status 1.
func tokenizeJSONL(in io.Reader, enc *json.Encoder, out *bufio.Writer, errw io.Writer, tok *tokenizer.Tokenizer, tpl *chat.Template, addSpecial bool) error {
	r := bufio.NewReader(in)
	failed := 0
	for lineNo := 1; ; lineNo++ {
		line, err := r.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			if perr := tokenizeLine(line, enc, tok, tpl, addSpecial); perr != nil {
				failed++
				fmt.Fprintf(errw, "lorakit: tokenize: stdin line %d: %v\n", lineNo, perr)
				if eerr := enc.Encode(struct {
					Error string `json:"error"`
				}{perr.Error()}); eerr != nil {
					return eerr
				}
			}
			if ferr := out.Flush(); ferr != nil {
				return ferr
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("tokenize: read stdin: %w", err)
		}
	}
	if failed > 0 {
		return withExitCode(1, fmt.Errorf("tokenize: %d line(s) failed", failed))
	}
	return nil
}

func tokenizeLine(line []byte, enc *json.Encoder, tok *tokenizer.Tokenizer, tpl *chat.Template, addSpecial bool) error {
	if tpl == nil {
		var rec struct {
			Text *string `json:"text"`
		}
		if err := json.Unmarshal(line, &rec); err != nil {
			return err
		}
		if rec.Text == nil {
			return errors.New(`missing "text"`)
		}
		return enc.Encode(struct {
			IDs []int `json:"ids"`
		}{nonNil(tok.Encode(*rec.Text, addSpecial))})
	}
	var rec map[string]json.RawMessage
	if err := json.Unmarshal(line, &rec); err != nil {
		return err
	}
	msgs, ok := rec["messages"]
	if !ok {
		return errors.New(`missing "messages"`)
	}
	gen := false
	if raw, ok := rec["add_generation_prompt"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &gen); err != nil {
			return fmt.Errorf("add_generation_prompt: %w", err)
		}
	}
	delete(rec, "messages")
	delete(rec, "add_generation_prompt")
	// Other keys are template variables; "template_kwargs" (an object) spreads its keys, like
	// apply_chat_template(**template_kwargs).
	if raw, ok := rec["template_kwargs"]; ok {
		delete(rec, "template_kwargs")
		var kw map[string]json.RawMessage
		if string(raw) != "null" {
			if err := json.Unmarshal(raw, &kw); err != nil {
				return fmt.Errorf("template_kwargs: %w", err)
			}
		}
		for k, v := range kw {
			rec[k] = v
		}
	}
	var extra json.RawMessage
	if len(rec) > 0 {
		b, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		extra = b
	}
	text, err := tpl.RenderJSON(msgs, gen, extra)
	if err != nil {
		return err
	}
	return enc.Encode(struct {
		Text string `json:"text"`
		IDs  []int  `json:"ids"`
	}{text, nonNil(tok.Encode(text, false))})
}
