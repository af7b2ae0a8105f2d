package tokenizer

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// synthByteLevel builds a small GPT-2-style byte-level tokenizer.json: 256 byte tokens, a few merges and
// added tokens (special and not).
func synthByteLevel(t testing.TB) []byte {
	t.Helper()
	vocab := map[string]int{}
	for b := 0; b < 256; b++ {
		vocab[byteToStr[b]] = b
	}
	mergeList := [][2]string{{"Ġ", "t"}, {"h", "e"}, {"Ġt", "he"}, {"i", "n"}, {"Ġ", "a"}, {"e", "r"},
		{"o", "n"}, {"Ġ", "w"}, {"Ġw", "o"}, {"r", "l"}, {"Ġwo", "rl"}, {"Ġworl", "d"}, {"Ġ", "Ġ"},
		{"ĠĠ", "ĠĠ"}, {"Ċ", "Ċ"}, {"Ã", "©"}, {"1", "2"}, {"12", "3"}, {"'", "s"}, {"æ", "Ĺ"}}
	var merges []string
	for _, m := range mergeList {
		merged := m[0] + m[1]
		if _, ok := vocab[merged]; !ok {
			vocab[merged] = len(vocab)
		}
		merges = append(merges, m[0]+" "+m[1])
	}
	n := len(vocab)
	doc := map[string]any{
		"version": "1.0",
		"added_tokens": []map[string]any{
			{"id": n, "content": "<|bos|>", "special": true, "normalized": false},
			{"id": n + 1, "content": "<|eos|>", "special": true, "normalized": false},
			{"id": n + 2, "content": "<think>", "special": false, "normalized": false},
		},
		"normalizer": nil,
		"pre_tokenizer": map[string]any{"type": "Sequence", "pretokenizers": []any{
			map[string]any{"type": "Split", "pattern": map[string]any{"Regex": llama3Pattern}, "behavior": "Isolated", "invert": false},
			map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
		}},
		"post_processor": map[string]any{"type": "TemplateProcessing",
			"single":         []any{map[string]any{"SpecialToken": map[string]any{"id": "<|bos|>", "type_id": 0}}, map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}}},
			"special_tokens": map[string]any{"<|bos|>": map[string]any{"id": "<|bos|>", "ids": []int{n}, "tokens": []string{"<|bos|>"}}}},
		"decoder": map[string]any{"type": "ByteLevel"},
		"model":   map[string]any{"type": "BPE", "vocab": vocab, "merges": merges, "ignore_merges": true},
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// synthSentencePiece builds a small Llama-2-style tokenizer.json: ▁ normaliser, byte fallback, Strip decoder.
func synthSentencePiece(t testing.TB) []byte {
	t.Helper()
	vocab := map[string]int{"<unk>": 0, "<s>": 1, "</s>": 2}
	for b := 0; b < 256; b++ {
		vocab[fmt.Sprintf("<0x%02X>", b)] = len(vocab)
	}
	for _, r := range "▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'é" {
		vocab[string(r)] = len(vocab)
	}
	mergeList := [][2]string{{"▁", "t"}, {"h", "e"}, {"▁t", "he"}, {"▁", "a"}, {"i", "n"}, {"▁", "▁"},
		{"▁▁", "▁▁"}, {"o", "n"}, {"c", "e"}, {"on", "ce"}, {"▁", "once"}, {"▁", "w"}, {"o", "r"}, {"▁w", "or"}}
	var merges [][]string
	for _, m := range mergeList {
		merged := m[0] + m[1]
		if _, ok := vocab[merged]; !ok {
			vocab[merged] = len(vocab)
		}
		merges = append(merges, []string{m[0], m[1]})
	}
	doc := map[string]any{
		"added_tokens": []map[string]any{
			{"id": 0, "content": "<unk>", "special": true}, {"id": 1, "content": "<s>", "special": true},
			{"id": 2, "content": "</s>", "special": true},
		},
		"normalizer": map[string]any{"type": "Sequence", "normalizers": []any{
			map[string]any{"type": "Prepend", "prepend": "▁"},
			map[string]any{"type": "Replace", "pattern": map[string]any{"String": " "}, "content": "▁"},
		}},
		"pre_tokenizer": nil,
		"post_processor": map[string]any{"type": "TemplateProcessing",
			"single":         []any{map[string]any{"SpecialToken": map[string]any{"id": "<s>", "type_id": 0}}, map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}}},
			"special_tokens": map[string]any{"<s>": map[string]any{"id": "<s>", "ids": []int{1}, "tokens": []string{"<s>"}}}},
		"decoder": map[string]any{"type": "Sequence", "decoders": []any{
			map[string]any{"type": "Replace", "pattern": map[string]any{"String": "▁"}, "content": " "},
			map[string]any{"type": "ByteFallback"}, map[string]any{"type": "Fuse"},
			map[string]any{"type": "Strip", "content": " ", "start": 1, "stop": 0},
		}},
		"model": map[string]any{"type": "BPE", "vocab": vocab, "merges": merges, "unk_token": "<unk>",
			"fuse_unk": true, "byte_fallback": true},
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeDir(t testing.TB, tokJSON []byte, cfg string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tokenizer.json"), tokJSON, 0o644); err != nil {
		t.Fatal(err)
	}
	if cfg != "" {
		if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func mustParse(t testing.TB, tokJSON []byte, cfg string) *Tokenizer {
	t.Helper()
	var c []byte
	if cfg != "" {
		c = []byte(cfg)
	}
	tok, err := Parse(tokJSON, c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// synthMetaspace is synthSentencePiece with the older layout: no normaliser, a Metaspace pre-tokenizer
// (prepend_scheme "first", split) and decoders ByteFallback + Metaspace.
func synthMetaspace(t testing.TB) []byte {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(synthSentencePiece(t), &doc); err != nil {
		t.Fatal(err)
	}
	doc["normalizer"] = nil
	doc["pre_tokenizer"] = map[string]any{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true}
	doc["decoder"] = map[string]any{"type": "Sequence", "decoders": []any{
		map[string]any{"type": "ByteFallback"},
		map[string]any{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true},
	}}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
