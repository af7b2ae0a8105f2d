package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// errInterrupted marks the end of a command stopped by SIGINT or SIGTERM; main prints it as the one line
// that says what was kept, and exits 130.
var errInterrupted = errors.New("interrupted")

// interruptible runs the work of a long command under a context that the first SIGINT or SIGTERM cancels
// (a second one kills the process at once, as the default handler does). Every long command goes through it
// so that Ctrl-C behaves the same everywhere: work stops at the next safe point, temporaries are removed,
// and the command exits 130 after one line saying what was kept. work returns that description when it is
// cancelled (e.g. "nothing written at ./merged" or "kept out.jsonl.partial; resume with ... --resume"); an
// empty one means nothing was written.
func interruptible(cmd *cobra.Command, work func(ctx context.Context) (kept string, err error)) error {
	parent := cmd.Context()
	if parent == nil {
		parent = context.Background()
	}
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	signalled := make(chan struct{})
	go func() {
		select {
		case <-sig:
			close(signalled)
			signal.Stop(sig) // the next Ctrl-C is not caught: it ends the process at once
			cancel()
		case <-ctx.Done():
		}
	}()
	cmd.SetContext(ctx) // what the work reaches through cmd (hub downloads) stops too
	defer cmd.SetContext(parent)
	kept, err := work(ctx)
	select {
	case <-signalled:
	default:
		return err
	}
	if kept == "" {
		kept = "nothing was written"
	}
	return withExitCode(130, fmt.Errorf("%w: %s", errInterrupted, kept))
}
