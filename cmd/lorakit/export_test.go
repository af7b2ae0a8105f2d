package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/models/gguf"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/testmodel"
)

func TestExportGGUF(t *testing.T) {
	base := t.TempDir()
	if err := testmodel.Write(base, testmodel.Options{ModelType: "qwen2"}); err != nil {
		t.Fatal(err)
	}
	ad := filepath.Join(t.TempDir(), "ad")
	a := lora.New(lora.NewConfig(2, 4, []string{"q_proj", "v_proj"}))
	for l := range 2 {
		for _, m := range []string{"q_proj", "v_proj"} {
			mod := "model.layers." + string(rune('0'+l)) + ".self_attn." + m
			out := 32
			if m == "v_proj" {
				out = 16
			}
			p := a.Config.NewPair(mod, 32, out)
			p.B[0] = 1
			a.Modules[mod] = p
		}
	}
	if err := a.Save(ad); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	var rep struct {
		Out, BaseOut, Modelfile string
		Notes                   []string
	}
	js := run(t, "export", "gguf", "--model", base, "--adapter", ad, "--base-gguf", filepath.Join(out, "base.gguf"),
		"--json", filepath.Join(out, "ad.gguf"))
	if err := json.Unmarshal([]byte(js), &rep); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"base.gguf", "ad.gguf"} {
		g, err := gguf.Open(filepath.Join(out, f))
		if err != nil {
			t.Fatal(err)
		}
		typ, _, _ := g.String("general.type")
		if want := map[string]string{"base.gguf": "model", "ad.gguf": "adapter"}[f]; typ != want {
			t.Fatalf("%s: general.type %q", f, typ)
		}
		g.Close()
	}
	mf, err := os.ReadFile(filepath.Join(out, "Modelfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"FROM ./base.gguf\n", "ADAPTER ./ad.gguf\n", "TEMPLATE \"\"\"", "<|im_start|>assistant\n", `PARAMETER stop "<|im_end|>"`} {
		if !bytes.Contains(mf, []byte(want)) {
			t.Errorf("Modelfile lacks %q:\n%s", want, mf)
		}
	}
	// the GGUF file's tokenizer (rebuilt from its metadata) and the folder's agree
	if a, b := run(t, "tokenize", "--tokenizer", base, "hello GGUF world"), run(t, "tokenize", "--tokenizer", filepath.Join(out, "base.gguf"), "hello GGUF world"); a != b {
		t.Fatalf("tokenize: folder %s, GGUF %s", a, b)
	}
	// a second run reuses the base and replaces its own outputs
	run(t, "export", "gguf", "--model", base, "--adapter", ad, "--base-gguf", filepath.Join(out, "base.gguf"), filepath.Join(out, "ad.gguf"))

	// files lorakit did not write are not replaced without --force
	other := filepath.Join(out, "notes.txt")
	os.WriteFile(other, []byte("mine"), 0o644)
	root := newRootCmd()
	root.SetOut(&bytes.Buffer{})
	root.SetErr(&bytes.Buffer{})
	root.SetArgs([]string{"export", "gguf", "--model", base, other})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("overwrote a non-GGUF file: %v", err)
	}
	if b, _ := os.ReadFile(other); string(b) != "mine" {
		t.Fatal("file changed")
	}
}
