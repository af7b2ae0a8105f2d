package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/train/data"
	"github.com/lorakit/lorakit/train/data/review"
)

func newDataReviewCmd() *cobra.Command {
	var (
		port                    int
		host, token, reviewPath string
		modelDir                string
		openBrowser             bool
	)
	cmd := &cobra.Command{
		Use:   "review SCORED.jsonl [--port 8090] [--host 127.0.0.1] [--token T] [--open] [--model DIR]",
		Short: "Screen scored examples in the browser: sort, filter, histogram cuts, keep/drop/edit with the keyboard",
		Long: `review serves a page on 127.0.0.1 (this machine only; --host to change) for a person to screen the
output of lorakit data score: a sortable, filterable table of the examples with every score, a histogram of
each score with the current cut, each example shown as the chat the model is trained on (roles, reasoning
folded, tool calls and tool results; with --model also the exact text of its chat template with the
trained-on part marked), and keep / drop / edit per example or for everything the filter shows. Keys: j/k move, y keep, n drop, u undecided,
e edit (Ctrl+Enter saves), Y/N keep/drop all shown, / search, ? help.

Every decision is on disk before the page says "saved": it is appended, fsynced, to SCORED.review.jsonl
(--review), one JSON line per decision, the last one per example winning; a reload, a crash or Ctrl-C loses
nothing, and the next review of the same file continues it. Decisions are keyed by line number and a hash
of the example, so a scored file that changed since is reported, not misapplied. Apply them with
  lorakit data filter SCORED.jsonl --review SCORED.review.jsonl --out KEPT.jsonl
--token T makes every API request carry T (the printed address passes it to the page).

On a remote machine, keep the default host and forward the port over SSH (ssh -L 8090:127.0.0.1:8090 HOST,
then open the printed address on your own machine), or listen on the network with --host (0.0.0.0, or one
of the machine's addresses) and --token T, which is then required: anyone who can reach the port and has
the token can read the data and change the review. Plain HTTP: on a network you do not trust, use the tunnel.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if port < 0 || port > 65535 {
				return fmt.Errorf("data review: --port %d is not a port", port)
			}
			host = strings.Trim(host, "[]") // [::1] as in a URL
			remote := !isLoopbackHost(host)
			if remote && token == "" {
				return fmt.Errorf("data review: --host %s can be reached from other machines: give --token T too (every request must then carry it), "+
					"or keep --host 127.0.0.1 and forward the port over SSH (ssh -L %d:127.0.0.1:%d HOST)", host, port, port)
			}
			o := review.Options{Scored: args[0], ReviewFile: reviewPath, Token: token, AnyHost: remote}
			if modelDir != "" {
				dir, err := resolveDir(cmd, "--model", modelDir)
				if err != nil {
					return err
				}
				_, tpl, err := models.LoadTokenizer(dir)
				if err != nil {
					return err
				}
				o.Template = tpl
			}
			if o.ReviewFile == "" {
				o.ReviewFile = data.ReviewPath(args[0])
			}
			return interruptible(cmd, func(ctx context.Context) (string, error) {
				return runReview(cmd, ctx, o, host, port, openBrowser)
			})
		},
	}
	f := cmd.Flags()
	f.IntVar(&port, "port", 8090, "port to listen on (0: any free port)")
	f.StringVar(&host, "host", "127.0.0.1", "address to listen on: a loopback one (this machine only), or another (0.0.0.0: every interface), which needs --token")
	f.StringVar(&token, "token", "", "require this token on every API request (header X-Lorakit-Token, Authorization: Bearer, or ?token=)")
	f.StringVar(&reviewPath, "review", "", "the review file (default: SCORED.review.jsonl next to the scored file)")
	f.StringVar(&modelDir, "model", "", "model folder: also show each example as its chat template renders it")
	f.BoolVar(&openBrowser, "open", false, "open the page in the default browser")
	return cmd
}

// runReview serves until ctx ends (Ctrl-C); every decision is already on disk by then.
func runReview(cmd *cobra.Command, ctx context.Context, o review.Options, host string, port int, openBrowser bool) (string, error) {
	r, err := review.Open(o)
	if err != nil {
		return "", err
	}
	defer r.Close()
	// loopback by default: the page shows the data and writes the review file; nothing else should reach it
	// unless asked for (--host, with a token).
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return "", fmt.Errorf("data review: %w (pick another with --port, or --port 0 for any free one)", err)
	}
	bound := ln.Addr().(*net.TCPAddr)
	addr := "http://" + bound.String() + "/"
	where := "bound to " + bound.IP.String() + ": this machine only"
	if o.AnyHost {
		where = "bound to " + bound.IP.String() + ": reachable from other machines, every request needs the token"
		if bound.IP.IsUnspecified() {
			addr = "http://" + net.JoinHostPort("THIS-MACHINE", strconv.Itoa(bound.Port)) + "/"
			where = "listening on every interface: put this machine's name or address for THIS-MACHINE; every request needs the token"
		}
	}
	if o.Token != "" {
		addr += "#token=" + url.QueryEscape(o.Token)
	}
	in := r.Info()
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "reviewing %d examples of %s (%d kept, %d dropped so far); decisions are saved to %s\n",
		in.Examples, in.Scored, in.Kept, in.Dropped, in.ReviewFile)
	if in.Repaired {
		fmt.Fprintf(out, "note: %s ended in a half-written record (a crash mid-save); it was cut off, every complete decision is kept\n", in.ReviewFile)
	}
	if n := len(in.StaleLines); n > 0 {
		fmt.Fprintf(out, "warning: %d decisions in %s were made on examples that have changed since (first at line %d); they are not applied until decided again\n",
			n, in.ReviewFile, in.StaleLines[0])
	}
	fmt.Fprintf(out, "open %s (%s); Ctrl-C stops\n", addr, where)
	if openBrowser && !bound.IP.IsUnspecified() {
		if err := startBrowser(addr); err != nil {
			fmt.Fprintf(cmd.ErrOrStderr(), "could not open a browser (%v); open the address above\n", err)
		}
	}
	err = r.Serve(ctx, ln)
	kept := "every decision is saved in " + o.ReviewFile
	if err != nil && !errors.Is(err, context.Canceled) {
		return kept, fmt.Errorf("data review: %w", err)
	}
	return kept, nil
}

// isLoopbackHost reports whether host names this machine only: localhost or a loopback address.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func startBrowser(addr string) error {
	var c *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		c = exec.Command("open", addr)
	case "windows":
		c = exec.Command("rundll32", "url.dll,FileProtocolHandler", addr)
	default:
		c = exec.Command("xdg-open", addr)
	}
	if err := c.Start(); err != nil {
		return err
	}
	go c.Wait() //nolint:errcheck // the opener exits on its own; its status says nothing about the page
	return nil
}
