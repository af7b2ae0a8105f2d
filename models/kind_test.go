package models

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/internal/testenv"
	"github.com/lorakit/lorakit/models/testmodel"
)

// TestLoadKind: a sequence classifier loads only when asked for (it has no LM head), a causal LM is refused as
// one, and AnyKind takes both.
func TestLoadKind(t *testing.T) {
	lm := filepath.Join(testenv.Testdata(t), "models", "stories260K")
	cls := filepath.Join(t.TempDir(), "rm")
	if err := testmodel.WriteClassifier(cls, lm, testmodel.ClassifierOptions{Labels: []string{"LABEL_0"}, PadTokenID: 0, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dir  string
		kind Kind
		want string // "" loads
	}{
		{cls, CausalLM, "is a sequence classifier"},
		{lm, SequenceClassifier, "is a causal language model"},
		{cls, SequenceClassifier, ""},
		{cls, AnyKind, ""},
		{lm, AnyKind, ""},
	} {
		m, err := Load(tc.dir, LoadOptions{Threads: 1, Kind: tc.kind})
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s as kind %d: %v", filepath.Base(tc.dir), tc.kind, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s as kind %d: err = %v, want %q", filepath.Base(tc.dir), tc.kind, err, tc.want)
		}
		if m != nil {
			if tc.dir == cls && (m.Net.Score == nil || m.Net.LMHead != nil || m.Tok == nil) {
				t.Errorf("classifier loaded without its score head or tokenizer")
			}
			m.Close()
		}
	}
}
