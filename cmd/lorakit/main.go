// Command lorakit fine-tunes, merges, quantises and serves Llama-family models with LoRA adapters.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "lorakit:", err)
		os.Exit(exitCode(err))
	}
}
