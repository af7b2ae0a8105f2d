package main

import (
	"fmt"
	"os"
	"path"

	"github.com/spf13/cobra"

	"github.com/lorakit/lorakit/internal/progress"
	"github.com/lorakit/lorakit/models/hub"
)

func init() { register(newPullCmd) }

func newPullCmd() *cobra.Command {
	var o hub.Options
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "pull REPO_ID",
		Short: "Download a model or adapter repository from the Hugging Face hub (resumable, verified)",
		Long: `Download the files lorakit needs from a Hugging Face hub repository into --dir (default: the
repository name). HF_ENDPOINT selects another hub and HF_TOKEN is sent as a bearer token. Partial downloads
resume; sizes and hashes are verified before a file is moved into place.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			repo := args[0]
			o.Endpoint = os.Getenv("HF_ENDPOINT")
			o.Token = os.Getenv("HF_TOKEN")
			if o.Dir == "" {
				o.Dir = path.Base(repo)
			}
			var bar *progress.Bar
			var cur string
			o.Progress = func(file string, done, total int64) {
				if file != cur {
					if bar != nil {
						bar.Finish()
					}
					cur, bar = file, progress.New(cmd.ErrOrStderr(), file, total, "B")
				}
				bar.Set(done, "")
			}
			res, err := hub.Download(cmd.Context(), repo, o)
			if bar != nil {
				bar.Finish()
			}
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d files downloaded (%d bytes), %d already present, in %s\n",
				repo, len(res.Downloaded), res.Bytes, len(res.Skipped), res.Dir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Revision, "revision", "main", "branch, tag or commit")
	f.StringVar(&o.Dir, "dir", "", "destination folder (default: the repository name)")
	f.StringArrayVar(&o.Include, "include", nil, "glob of files to fetch (repeatable; default: the files lorakit needs)")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}
