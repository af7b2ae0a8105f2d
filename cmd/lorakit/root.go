package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/lorakit/lorakit/models/kernels"
)

// commands holds the constructors that each command file registers in its init.
// It is written only during package initialisation, before main runs.
var commands []func() *cobra.Command

// register adds a subcommand constructor; call it from an init function.
func register(fn func() *cobra.Command) { commands = append(commands, fn) }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "lorakit",
		Short:         "Fine-tune, merge, quantise and serve Llama-family models with LoRA on a CPU",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	addKernelFlags(root)
	for _, fn := range commands {
		root.AddCommand(fn())
	}
	root.Version = versionLine()
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetFlagErrorFunc(flagError)
	refuseUnknownSubcommands(root)
	return root
}

// addKernelFlags makes the kernel choice, which the kernels take as a setting and never read from the
// environment: --no-avx512 (or LORAKIT_NO_AVX512 set to anything but 0/false) keeps the AVX2 kernels (GEMM tile and the
// quantised kernels of models/quant, which read the same switch) on an AVX-512 CPU, to measure there what an
// AVX2-only machine runs.
func addKernelFlags(root *cobra.Command) {
	noAVX512 := envSet("LORAKIT_NO_AVX512")
	root.PersistentFlags().BoolVar(&noAVX512, "no-avx512", noAVX512,
		"keep the AVX2 kernels (GEMM tile, 4-bit/int8/Q8_0 kernels) on a CPU with AVX-512 (also LORAKIT_NO_AVX512=1)")
	kernels.SetAVX512(!noAVX512) // already now, so that --version reports the kernels in use
	root.PersistentPreRun = func(*cobra.Command, []string) { kernels.SetAVX512(!noAVX512) }
}

// envSet reports whether the environment variable name turns a switch on: set and not a false value ("0",
// "false", as strconv.ParseBool reads them), so that NAME=0 does not mean the opposite of what it says.
func envSet(name string) bool {
	v := os.Getenv(name)
	if v == "" {
		return false
	}
	on, err := strconv.ParseBool(v)
	return err != nil || on
}

// refuseUnknownSubcommands makes every command group (lorakit data ...) answer an unknown subcommand with an
// error and a suggestion, as cobra does at the top level, instead of printing help and exiting 0.
func refuseUnknownSubcommands(c *cobra.Command) {
	for _, sub := range c.Commands() {
		refuseUnknownSubcommands(sub)
	}
	if !c.HasParent() || !c.HasSubCommands() || c.Runnable() {
		return
	}
	c.Args = cobra.ArbitraryArgs
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return cmd.Help()
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += "\n\nDid you mean this?\n\t" + strings.Join(s, "\n\t")
		}
		//lint:ignore ST1005 printed as is by main: a multi-line usage hint that ends in a sentence
		return fmt.Errorf("%s\n\nRun '%s --help' for usage.", msg, cmd.CommandPath())
	}
}

// flagError adds the nearest flag names to an unknown-flag error (--max-step → --max-steps).
func flagError(cmd *cobra.Command, err error) error {
	name, ok := strings.CutPrefix(err.Error(), "unknown flag: --")
	if !ok {
		//lint:ignore ST1005 printed as is by main: a multi-line usage hint that ends in a sentence
		return fmt.Errorf("%w\nRun '%s --help' for usage.", err, cmd.CommandPath())
	}
	var near []string
	best := 3
	visit := func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		d := levenshtein(name, f.Name)
		switch {
		case strings.HasPrefix(f.Name, name) || strings.HasPrefix(name, f.Name):
			d = min(d, 1)
		}
		if d < best {
			best, near = d, near[:0]
		}
		if d == best {
			near = append(near, "--"+f.Name)
		}
	}
	cmd.Flags().VisitAll(visit)
	cmd.InheritedFlags().VisitAll(visit)
	if len(near) == 0 {
		//lint:ignore ST1005 printed as is by main: a multi-line usage hint that ends in a sentence
		return fmt.Errorf("%w\nRun '%s --help' for the flags.", err, cmd.CommandPath())
	}
	sort.Strings(near)
	return fmt.Errorf("%w\n\nDid you mean this?\n\t%s", err, strings.Join(near, "\n\t"))
}

// levenshtein is the edit distance between a and b.
func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// exitError carries a specific process exit code (e.g. `data check` exits 1 on bad lines).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// withExitCode wraps err so that main exits with code.
func withExitCode(code int, err error) error { return &exitError{code: code, err: err} }

func exitCode(err error) int {
	var e *exitError
	if errors.As(err, &e) {
		return e.code
	}
	return 1
}

// printJSON writes v as one indented JSON object followed by a newline.
func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}
