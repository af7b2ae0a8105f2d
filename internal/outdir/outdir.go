// Package outdir holds the one rule by which lorakit commands decide whether they may write an output
// folder that already exists: nothing a user has is ever replaced silently.
package outdir

import (
	"fmt"
	"os"
	"strings"
)

// Rule describes one command's output folder.
type Rule struct {
	// Command names the command in messages ("merge", "train").
	Command string
	// Own reports whether an existing folder is this command's earlier output; OwnDesc says how it is
	// recognised, for the message ("a previous lorakit merge output (lorakit_merge.json)").
	Own     func(dir string) bool
	OwnDesc string
	// ForceOwn: even the command's own earlier output is replaced only with --force (training runs are
	// expensive); without it an earlier output is replaced freely (merge and quantize rebuild theirs).
	ForceOwn bool
	// Writes, when set, reports whether a name at the top of the folder is one the command writes. A folder
	// holding any other name is refused even with --force: it holds something of the user's.
	Writes func(name string) bool
}

// Check returns nil when out may be written: it does not exist, is empty, or the rule allows replacing it.
// Otherwise the error names the folder and what to do.
func (r Rule) Check(out string, force bool) error {
	st, err := os.Stat(out)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return fmt.Errorf("%s: output %s: %w", r.Command, out, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("%s: output %s exists and is not a folder; choose another output", r.Command, out)
	}
	ents, err := os.ReadDir(out)
	if err != nil {
		return fmt.Errorf("%s: output %s: %w", r.Command, out, err)
	}
	if len(ents) == 0 {
		return nil
	}
	if r.Writes != nil {
		var foreign []string
		for _, e := range ents {
			if !r.Writes(e.Name()) {
				foreign = append(foreign, e.Name())
			}
		}
		if len(foreign) > 0 {
			if len(foreign) > 3 {
				foreign = append(foreign[:3], fmt.Sprintf("and %d more", len(foreign)-3))
			}
			return fmt.Errorf("%s: output folder %s holds files %s did not write (%s); refusing to write into it, even with --force: choose another output or move them away",
				r.Command, out, r.Command, strings.Join(foreign, ", "))
		}
	}
	own := r.Own != nil && r.Own(out)
	switch {
	case own && !r.ForceOwn, force:
		return nil
	case own:
		return fmt.Errorf("%s: output folder %s is %s; refusing to replace it: pass --force to replace it, or choose another output", r.Command, out, r.OwnDesc)
	}
	return fmt.Errorf("%s: output folder %s exists and is not %s; refusing to replace it: remove it, choose another output, or pass --force", r.Command, out, r.OwnDesc)
}

// NotInput refuses an output path that is one of the inputs: the same file by inode, whatever the names (a
// symlink, a hard link, ./a vs a), so that writing it can never destroy what is being read. flag names the
// output in the message ("--out").
func NotInput(flag, out string, inputs ...string) error {
	so, err := os.Stat(out)
	if err != nil {
		return nil // not there yet: it cannot be an input
	}
	for _, in := range inputs {
		if si, err := os.Stat(in); err == nil && os.SameFile(so, si) {
			return fmt.Errorf("%s %s is the input %s (the same file); writing it would destroy the input: choose another output", flag, out, in)
		}
	}
	return nil
}
