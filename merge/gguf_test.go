package merge

import (
	"context"
	"io"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/gguf"
	"github.com/lorakit/lorakit/models/ggufconv"
	"github.com/lorakit/lorakit/models/safetensors"
	"github.com/lorakit/lorakit/quant"
)

// exportGGUF writes the folder dir as a GGUF file of type typ.
func exportGGUF(t *testing.T, dir string, typ gguf.Type) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "base.gguf")
	if _, err := ggufconv.ExportModel(context.Background(), dir, out, ggufconv.ExportOptions{Type: typ}); err != nil {
		t.Fatal(err)
	}
	return out
}

// tensorsOf reads every tensor of a folder's weights by name.
func tensorsOf(t *testing.T, dir string) map[string]string {
	t.Helper()
	ck, err := safetensors.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	out := map[string]string{}
	for _, name := range ck.Names() {
		info, _, _ := ck.Info(name)
		b, err := ck.Bytes(name)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = string(info.DType) + ":" + string(b)
	}
	return out
}

// greedy is the model's greedy continuation of a fixed prompt.
func greedy(t *testing.T, dir string) []int {
	t.Helper()
	m, err := models.Load(dir, models.LoadOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	res, err := m.Generate(context.Background(), m.Tok.Encode("Once upon a time", true), models.GenerateOptions{MaxTokens: 40, IgnoreEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	return res.IDs
}

// TestMergeGGUFBase: merging into a GGUF export of stories260K (f32, and bf16 from the bf16 folder) writes the
// same weights, bit for bit, as merging into the folder itself, and so the same greedy output; the tokenizer
// rebuilt from the GGUF metadata encodes like the folder's. quantize reads a GGUF base the same way.
func TestMergeGGUFBase(t *testing.T) {
	for _, c := range []struct {
		name string
		typ  gguf.Type
	}{{"stories260K", gguf.F32}, {"stories260K-bf16", gguf.BF16}} {
		base := storiesModel(t, c.name)
		dir := saveAdapter(t, storiesAdapter(t, base))
		file := exportGGUF(t, base, c.typ)
		fromHF, fromGGUF := filepath.Join(t.TempDir(), "hf"), filepath.Join(t.TempDir(), "gguf")
		opt := Options{Adapters: []Source{{Dir: dir, Weight: 1}}, Threads: 1}
		if _, err := Run(context.Background(), base, fromHF, opt); err != nil {
			t.Fatal(err)
		}
		res, err := Run(context.Background(), file, fromGGUF, opt)
		if err != nil {
			t.Fatal(err)
		}
		if res.Base != file {
			t.Errorf("result names base %q, want the GGUF file", res.Base)
		}
		if a, b := tensorsOf(t, fromHF), tensorsOf(t, fromGGUF); !reflect.DeepEqual(a, b) {
			t.Fatalf("%s: merged weights differ (%d vs %d tensors)", c.name, len(a), len(b))
		}
		g1, g2 := greedy(t, fromHF), greedy(t, fromGGUF)
		if !reflect.DeepEqual(g1, g2) || len(g1) != 40 {
			t.Fatalf("%s: greedy from the HF merge %v, from the GGUF merge %v", c.name, g1, g2)
		}
		noTemps(t, filepath.Dir(fromGGUF))
		qHF, qGGUF := filepath.Join(t.TempDir(), "q"), filepath.Join(t.TempDir(), "q")
		if _, err := quant.QuantizeFolder(base, qHF, quant.FolderOptions{Threads: 1}); err != nil {
			t.Fatal(err)
		}
		if _, err := quant.QuantizeFolder(file, qGGUF, quant.FolderOptions{Threads: 1}); err != nil {
			t.Fatal(err)
		}
		if a, b := tensorsOf(t, qHF), tensorsOf(t, qGGUF); !reflect.DeepEqual(a, b) {
			t.Fatalf("%s: quantised weights differ", c.name)
		}
	}
}

// TestGGUFBaseRefusals: what a folder cannot carry exactly is refused with the reason.
func TestGGUFBaseRefusals(t *testing.T) {
	base := storiesModel(t, "stories260K")
	src := exportGGUF(t, base, gguf.F32)
	g, err := gguf.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	// two tokens with the same text: tokenizer.json's vocabulary (a map) cannot hold both
	kvs := append([]gguf.KV(nil), g.KV...)
	for i, kv := range kvs {
		if kv.Key == "tokenizer.ggml.tokens" {
			toks := append([]string(nil), kv.Value.([]string)...)
			toks[len(toks)-1] = toks[len(toks)-2]
			kvs[i].Value = toks
		}
	}
	bad := filepath.Join(t.TempDir(), "dup.gguf")
	err = gguf.Write(bad, kvs, g.Tensors, func(i int, w io.Writer) error {
		b, _, err := g.TensorBytes(g.Tensors[i].Name)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Run(context.Background(), bad, filepath.Join(t.TempDir(), "m"), Options{Adapters: []Source{{Dir: saveAdapter(t, storiesAdapter(t, base)), Weight: 1}}})
	if err == nil || !strings.Contains(err.Error(), "cannot be written as tokenizer.json without loss") {
		t.Fatalf("duplicate token: %v", err)
	}
}
