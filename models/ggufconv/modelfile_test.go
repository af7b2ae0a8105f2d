package ggufconv

import (
	"path/filepath"
	"testing"

	"github.com/lorakit/lorakit/internal/testenv"
	"github.com/lorakit/lorakit/models/chat"
	"github.com/lorakit/lorakit/models/tokenizer"
)

// TestOllamaTemplateFamilies reports which of the shared tokenizer families' chat templates translate into an
// Ollama TEMPLATE; a translation is only ever returned after it rendered the probes exactly (checked inside).
func TestOllamaTemplateFamilies(t *testing.T) {
	shared := testenv.Dir(t, "tokenizers")
	want := map[string]bool{"llama2": false, "mistral": true, "llama3": true, "qwen3": false, "gemma3": true, "deepseek_v3": true}
	for fam, ok := range want {
		tok, err := tokenizer.Load(filepath.Join(shared, "tokenizers", fam))
		if err != nil {
			t.Fatal(err)
		}
		c := tok.Config()
		tpl, err := chat.New(c.ChatTemplate, c.BOSToken, c.EOSToken)
		if err != nil {
			t.Fatal(err)
		}
		bos := ""
		if id, has := tok.BOS(); has && len(tok.Encode("a", true)) > len(tok.Encode("a", false)) {
			bos = tok.Token(id)
		}
		_, err = OllamaTemplate(tpl, bos)
		t.Logf("%s: translated %v (%v)", fam, err == nil, err)
		if (err == nil) != ok {
			t.Errorf("%s: translated = %v, want %v", fam, err == nil, ok)
		}
	}
}
