package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/lorakit/lorakit/models/hub"
)

func init() { register(newPullCmd) }

func newPullCmd() *cobra.Command {
	var include []string
	var revision, localDir string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "pull ORG/NAME",
		Short: "Download a model or adapter repository from the Hugging Face hub (resumable, verified)",
		Long: `Download the files lorakit needs from a Hugging Face hub repository into the Hugging Face cache
(HF_HUB_CACHE, default $HF_HOME/hub, default ~/.cache/huggingface/hub) in huggingface_hub's layout:
models--ORG--NAME/blobs/ETAG, snapshots/COMMIT/FILE linked into blobs, refs/REVISION. Every --model,
--adapter and input then takes ORG/NAME[@REVISION] and reads it from the cache without the network.
--local-dir DIR writes plain files into DIR instead.

HF_ENDPOINT selects another hub; the token comes from HF_TOKEN or $HF_HOME/token. Partial downloads resume;
sizes and hashes are verified before a file is moved into place.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			repo := args[0]
			ro := hubSettings(cmd)
			if ro.Offline {
				return fmt.Errorf("pull %s: HF_HUB_OFFLINE is set", repo)
			}
			o := ro.Options
			o.Revision, o.Include = revision, include
			var res *hub.Result
			err := interruptible(cmd, func(ctx context.Context) (string, error) {
				var err error
				where, again := "the Hugging Face cache", "lorakit pull "+repo
				if localDir != "" {
					o.Dir = localDir
					where, again = localDir, again+" --local-dir "+localDir
					res, err = hub.Download(ctx, repo, o)
				} else {
					res, err = ro.Cache.Download(ctx, repo, o)
				}
				if err != nil {
					return fmt.Sprintf("kept the partial downloads (*.incomplete) in %s; resume with: %s", where, again), err
				}
				return "the download had completed", nil
			})
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
	f.StringVar(&revision, "revision", "main", "branch, tag or commit")
	f.StringVar(&localDir, "local-dir", "", "write plain files into this folder instead of the Hugging Face cache")
	f.StringVar(&localDir, "dir", "", "same as --local-dir")
	_ = f.MarkHidden("dir")
	f.StringArrayVar(&include, "include", nil, "glob of files to fetch (repeatable; default: the files lorakit needs)")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}
