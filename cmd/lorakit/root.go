package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

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
	return root
}

// addKernelFlags makes the kernel choice, which the kernels take as a setting and never read from the
// environment: --no-avx512 (or LORAKIT_NO_AVX512 set to anything) keeps the AVX2 GEMM tile on an AVX-512 CPU,
// to measure there what an AVX2-only machine runs.
func addKernelFlags(root *cobra.Command) {
	noAVX512 := os.Getenv("LORAKIT_NO_AVX512") != ""
	root.PersistentFlags().BoolVar(&noAVX512, "no-avx512", noAVX512,
		"keep the AVX2 GEMM tile on a CPU with AVX-512 (also LORAKIT_NO_AVX512=1)")
	root.PersistentPreRun = func(*cobra.Command, []string) { kernels.SetAVX512(!noAVX512) }
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
