package outdir

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRule(t *testing.T) {
	dir := t.TempDir()
	mk := func(name string, files ...string) string {
		p := filepath.Join(dir, name)
		os.MkdirAll(p, 0o755)
		for _, f := range files {
			os.WriteFile(filepath.Join(p, f), []byte("x"), 0o644)
		}
		return p
	}
	own := func(d string) bool { _, err := os.Stat(filepath.Join(d, "mine.json")); return err == nil }
	free := Rule{Command: "merge", Own: own, OwnDesc: "a merge output"}
	strict := Rule{Command: "train", Own: own, OwnDesc: "a train output", ForceOwn: true,
		Writes: func(n string) bool { return n == "mine.json" || n == "w.bin" }}
	cases := []struct {
		rule  Rule
		dir   string
		force bool
		want  string // "" allowed, else a substring of the error
	}{
		{free, filepath.Join(dir, "missing"), false, ""},
		{free, mk("empty"), false, ""},
		{free, mk("prev", "mine.json"), false, ""},
		{free, mk("user", "notes.txt"), false, "--force"},
		{free, mk("user2", "notes.txt"), true, ""},
		{strict, mk("tprev", "mine.json", "w.bin"), false, "pass --force"},
		{strict, mk("tprev2", "mine.json"), true, ""},
		{strict, mk("tuser", "notes.txt"), true, "notes.txt"},
		{strict, mk("tmixed", "mine.json", "notes.txt"), true, "even with --force"},
	}
	for _, c := range cases {
		err := c.rule.Check(c.dir, c.force)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s %s force=%v: %v, want %q", c.rule.Command, filepath.Base(c.dir), c.force, err, c.want)
		}
	}
}

func TestNotInput(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "s.jsonl")
	os.WriteFile(in, []byte("{}\n"), 0o644)
	link := filepath.Join(dir, "hard.jsonl")
	os.Link(in, link)
	for _, out := range []string{in, filepath.Join(dir, ".", "s.jsonl"), link} {
		if err := NotInput("--out", out, in); err == nil || !strings.Contains(err.Error(), "same file") {
			t.Errorf("%s: %v", out, err)
		}
	}
	if err := NotInput("--out", filepath.Join(dir, "new.jsonl"), in); err != nil {
		t.Error(err)
	}
}
