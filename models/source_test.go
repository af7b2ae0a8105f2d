package models

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/models/testmodel"
)

// Open tells what a --model path holds before anything is parsed.
func TestOpenRefuses(t *testing.T) {
	adapter := t.TempDir()
	os.WriteFile(filepath.Join(adapter, "adapter_config.json"), []byte(`{}`), 0o644)
	file := filepath.Join(t.TempDir(), "model.gguf")
	os.WriteFile(file, []byte("GGUF"), 0o644)
	notes := t.TempDir()
	os.WriteFile(filepath.Join(notes, "notes.txt"), []byte("x"), 0o644)
	other := filepath.Join(t.TempDir(), "model.bin")
	os.WriteFile(other, []byte("PK\x03\x04"), 0o644)
	ggufs := t.TempDir()
	os.WriteFile(filepath.Join(ggufs, "m-q4_0.gguf"), []byte("GGUF"), 0o644)
	for _, c := range []struct{ path, want string }{
		{adapter, "is a PEFT adapter folder (adapter_config.json), not a model; pass it as --adapter, with --model its base"},
		{file, "truncated"},
		{other, "is a file but not a GGUF file"},
		{t.TempDir(), "is empty"},
		{notes, "no config.json"},
		{ggufs, "pass the file itself"},
		{filepath.Join(t.TempDir(), "missing"), "does not exist"},
	} {
		if _, err := Load(c.path, LoadOptions{}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.path, err, c.want)
		}
	}
}

// NoTokenizer loads the same network from config and weights alone, with the config's EOS ids.
func TestLoadNoTokenizer(t *testing.T) {
	dir := tiny(t, testmodel.Options{Seed: 3})
	full := mustLoad(t, dir, LoadOptions{Threads: 1})
	os.Remove(filepath.Join(dir, "tokenizer.json"))
	if _, err := Load(dir, LoadOptions{}); err == nil || !strings.Contains(err.Error(), "tokenizer.json") {
		t.Fatalf("missing tokenizer: %v", err)
	}
	m := mustLoad(t, dir, LoadOptions{Threads: 1, NoTokenizer: true})
	if m.Tok != nil || m.Chat != nil || m.Checkpoint() == nil {
		t.Fatalf("NoTokenizer: tok %v chat %v checkpoint %v", m.Tok, m.Chat, m.Checkpoint())
	}
	if len(m.EOS) == 0 || !slices.Equal(m.EOS, full.EOS[:len(m.EOS)]) {
		t.Fatalf("EOS %v, with tokenizer %v", m.EOS, full.EOS)
	}
}
