package tokenizer

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/lorakit/lorakit/internal/testenv"
)

func TestSynthByteLevel(t *testing.T) {
	tok := mustParse(t, synthByteLevel(t), `{"bos_token":"<|bos|>","eos_token":{"__type":"AddedToken","content":"<|eos|>"}}`)
	ids := tok.Encode("the world", false)
	want := []int{tok.mustID(t, "t"), tok.mustID(t, "he"), tok.mustID(t, "Ġworld")}
	if !slices.Equal(ids, want) {
		t.Fatalf("ids %v, want %v", ids, want)
	}
	bos, ok := tok.BOS()
	if !ok || bos != tok.mustID(t, "<|bos|>") {
		t.Fatalf("BOS %d %v", bos, ok)
	}
	if eos, ok := tok.EOS(); !ok || eos != tok.mustID(t, "<|eos|>") {
		t.Fatalf("EOS %d %v", eos, ok)
	}
	if got := tok.Encode("the world", true); !slices.Equal(got, append([]int{bos}, want...)) {
		t.Fatalf("with special %v", got)
	}
	text := "<|bos|>hi<think>x</think> 123 'S café\n\n"
	ids = tok.Encode(text, false)
	if ids[0] != bos || !slices.Contains(ids, tok.mustID(t, "<think>")) {
		t.Fatalf("added tokens not matched: %v", ids)
	}
	if got := tok.Decode(ids, false); got != text {
		t.Fatalf("round trip %q", got)
	}
	if got := tok.Decode(ids, true); got != "hi<think>x</think> 123 'S café\n\n" {
		t.Fatalf("skip special %q", got)
	}
	if !tok.IsSpecial(bos) || tok.IsSpecial(tok.mustID(t, "<think>")) || tok.IsSpecial(5) {
		t.Fatal("IsSpecial")
	}
	if tok.VocabSize() != len(tok.tokens) || tok.Token(bos) != "<|bos|>" || tok.Token(-1) != "" || tok.Token(1<<30) != "" {
		t.Fatal("Token/VocabSize")
	}
	// Unknown ids are skipped, never a panic.
	if got := tok.Decode([]int{-5, 1 << 30, tok.mustID(t, "Ġworld")}, false); got != " world" {
		t.Fatalf("decode with bad ids %q", got)
	}
	// Invalid UTF-8 input is repaired, not rejected.
	if got := tok.Decode(tok.Encode("a\xffb", false), false); got != "a\uFFFDb" {
		t.Fatalf("invalid input %q", got)
	}
}

func (t *Tokenizer) mustID(tb testing.TB, s string) int {
	tb.Helper()
	id, ok := t.TokenID(s)
	if !ok {
		tb.Fatalf("no token %q", s)
	}
	return id
}

func TestSynthSentencePiece(t *testing.T) {
	tok := mustParse(t, synthSentencePiece(t), `{"bos_token":"<s>","eos_token":"</s>","tokenizer_class":"LlamaTokenizer"}`)
	if !tok.model.metaSplit {
		t.Fatal("metaSplit should be on")
	}
	ids := tok.Encode("once the world", true)
	want := []int{1, tok.mustID(t, "▁once"), tok.mustID(t, "▁the"), tok.mustID(t, "▁wor"), tok.mustID(t, "l"), tok.mustID(t, "d")}
	if !slices.Equal(ids, want) {
		t.Fatalf("ids %v, want %v", ids, want)
	}
	// 日 is not in the vocabulary: three byte tokens.
	ids = tok.Encode("日", false)
	if len(ids) != 4 || ids[1] != tok.mustID(t, "<0xE6>") {
		t.Fatalf("byte fallback %v", ids)
	}
	for _, s := range []string{"once the world", "  two  spaces ", "日本 and é", "x\ny\tz", ""} {
		if got := tok.Decode(tok.Encode(s, false), false); got != s {
			t.Fatalf("round trip %q -> %q", s, got)
		}
	}
	// Each segment around an added token gets its own ▁, as in tokenizers.
	ids = tok.Encode("a<s>b", false)
	if !slices.Equal(ids, []int{tok.mustID(t, "▁a"), 1, tok.mustID(t, "▁"), tok.mustID(t, "b")}) &&
		!slices.Equal(ids, []int{tok.mustID(t, "▁"), tok.mustID(t, "a"), 1, tok.mustID(t, "▁"), tok.mustID(t, "b")}) {
		t.Fatalf("segments %v", ids)
	}
	// add_eos_token from the config (LlamaTokenizer class rebuilds the template).
	tok2 := mustParse(t, synthSentencePiece(t), `{"bos_token":"<s>","eos_token":"</s>","tokenizer_class":"LlamaTokenizerFast","add_bos_token":false,"add_eos_token":true}`)
	if got := tok2.Encode("a", true); got[0] == 1 || got[len(got)-1] != 2 {
		t.Fatalf("add_eos_token: %v", got)
	}
}

func TestStreamDecoderUTF8(t *testing.T) {
	tok := mustParse(t, synthByteLevel(t), "")
	ids := tok.Encode("a😀b", false) // a, 4 byte tokens, b
	d := tok.NewStreamDecoder(false)
	var outs []string
	for _, id := range ids {
		outs = append(outs, d.Add(id))
	}
	outs = append(outs, d.Flush())
	for _, o := range outs {
		if !utf8.ValidString(o) {
			t.Fatalf("invalid piece %q", o)
		}
	}
	if strings.Join(outs, "") != "a😀b" || outs[1] != "" || outs[2] != "" || outs[3] != "" {
		t.Fatalf("stream %q", outs)
	}
	// Invalid and truncated sequences: the stream gives what Decode gives.
	f0, f0x9f := tok.mustID(t, byteToStr[0xF0]), tok.mustID(t, byteToStr[0x9F])
	a, cont := tok.mustID(t, "a"), tok.mustID(t, byteToStr[0x80])
	for _, seq := range [][]int{{f0, a}, {f0, f0x9f}, {cont, cont, a}, {a, f0, f0x9f, f0x9f}, {f0, f0x9f, a, f0}} {
		if got, want := streamAll(tok, seq, false), tok.Decode(seq, false); got != want {
			t.Fatalf("%v: stream %q, decode %q", seq, got, want)
		}
	}
}

func TestStreamSentencePiece(t *testing.T) {
	tok := mustParse(t, synthSentencePiece(t), "")
	ids := tok.Encode("日 once", false)
	d := tok.NewStreamDecoder(false)
	got := ""
	for i, id := range ids {
		s := d.Add(id)
		if i > 0 && i < 4 && s != "" {
			t.Fatalf("byte run emitted early at %d: %q", i, s)
		}
		got += s
	}
	got += d.Flush()
	if got != "日 once" || tok.Decode(ids, false) != got {
		t.Fatalf("stream %q", got)
	}
	// A dangling byte run at the end decodes at Flush, one U+FFFD per byte as ByteFallback does.
	seq := []int{tok.mustID(t, "▁a"), tok.mustID(t, "<0xE6>"), tok.mustID(t, "<0x97>")}
	if got, want := streamAll(tok, seq, false), tok.Decode(seq, false); got != want || want != "a\uFFFD\uFFFD" {
		t.Fatalf("stream %q decode %q", got, want)
	}
}

func TestCleanUpStream(t *testing.T) {
	cfg := &TokenizerConfig{CleanUpTokenizationSpaces: true}
	r := rand.New(rand.NewPCG(3, 4))
	alphabet := []string{" ", ".", "?", "!", ",", "'", "n", "t", "m", "s", "v", "e", "r", "x", "é", " '", "n't", " 's"}
	for i := 0; i < 2000; i++ {
		var parts []string
		for k := r.IntN(12); k >= 0; k-- {
			var sb strings.Builder
			for j := r.IntN(4); j >= 0; j-- {
				sb.WriteString(alphabet[r.IntN(len(alphabet))])
			}
			parts = append(parts, sb.String())
		}
		d := &StreamDecoder{t: &Tokenizer{config: cfg}}
		got := ""
		for _, p := range parts {
			got += d.clean(p, false)
		}
		got += d.clean("", true)
		if want := cleanUpTokenization(strings.Join(parts, "")); got != want {
			t.Fatalf("%q: stream %q, whole %q", parts, got, want)
		}
	}
}

func TestLossyUTF8(t *testing.T) {
	for in, want := range map[string]string{
		"abc": "abc", "\xE2\x82a": "\uFFFDa", "\xF0\x9F\x98x": "\uFFFDx", "\x80\x80": "\uFFFD\uFFFD",
		"\xED\xA0\x80": "\uFFFD\uFFFD\uFFFD", "\xE0\x80": "\uFFFD\uFFFD", "\xF4\x90\x80\x80": "\uFFFD\uFFFD\uFFFD\uFFFD",
		"é\xC3": "é\uFFFD", "\xC3\xA9": "é",
	} {
		if got := lossyUTF8([]byte(in)); got != want {
			t.Errorf("%q: got %q want %q", in, got, want)
		}
	}
	if incompleteTail([]byte("a\xF0\x9F")) != 2 || incompleteTail([]byte("a\xF0\x9Fx")) != 0 || incompleteTail([]byte("\xE2\x82\xAC")) != 0 {
		t.Error("incompleteTail")
	}
}

func TestAddedTokenFlags(t *testing.T) {
	doc := string(synthByteLevel(t))
	doc = strings.Replace(doc, `"added_tokens":[`, `"added_tokens":[{"id":400,"content":"<L>","lstrip":true,"special":true},`+
		`{"id":401,"content":"<R>","rstrip":true,"special":true},{"id":402,"content":"wd","single_word":true}, `, 1)
	tok := mustParse(t, []byte(doc), "")
	sp := tok.mustID(t, "Ġ")
	if got := tok.Encode("a  <L>b", false); !slices.Equal(got, []int{tok.mustID(t, "a"), 400, tok.mustID(t, "b")}) {
		t.Fatalf("lstrip %v", got)
	}
	if got := tok.Encode("a<R>  b", false); !slices.Equal(got, []int{tok.mustID(t, "a"), 401, tok.mustID(t, "b")}) {
		t.Fatalf("rstrip %v", got)
	}
	if got := tok.Encode("x wd y", false); !slices.Contains(got, 402) {
		t.Fatalf("single_word alone %v", got)
	}
	if got := tok.Encode("xwd", false); slices.Contains(got, 402) {
		t.Fatalf("single_word inside a word %v", got)
	}
	_ = sp
}

func TestConfig(t *testing.T) {
	dir := writeDir(t, synthByteLevel(t), `{"bos_token":{"__type":"AddedToken","content":"<|bos|>","normalized":true},
		"eos_token":null,"add_bos_token":true,"clean_up_tokenization_spaces":true,
		"chat_template":[{"name":"tool_use","template":"T"},{"name":"default","template":"D"}]}`)
	tok, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := tok.Config()
	if c.BOSToken != "<|bos|>" || c.EOSToken != "" || !c.AddBOSToken || !c.HasAddBOSToken || c.ChatTemplate != "D" || !c.CleanUpTokenizationSpaces {
		t.Fatalf("config %+v", c)
	}
	if _, ok := tok.EOS(); ok {
		t.Fatal("EOS without eos_token")
	}
	// No tokenizer_config.json; chat_template.jinja is picked up.
	dir = writeDir(t, synthByteLevel(t), "")
	if err := os.WriteFile(filepath.Join(dir, "chat_template.jinja"), []byte("J"), 0o644); err != nil {
		t.Fatal(err)
	}
	tok, err = Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Config().ChatTemplate != "J" || tok.Config().BOSToken != "" {
		t.Fatalf("config %+v", tok.Config())
	}
	if _, err := parseConfig([]byte(`{"bos_token":5}`), "x.json", ""); err == nil || !strings.Contains(err.Error(), "bos_token") {
		t.Fatalf("want bos_token error, got %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	good := string(synthByteLevel(t))
	cases := map[string]struct{ doc, want string }{
		"bad json":       {`{"model":`, "unexpected end"},
		"unigram":        {`{"model":{"type":"Unigram","vocab":[]}}`, `"Unigram" is not supported`},
		"no vocab":       {`{"model":{"type":"BPE"}}`, "model.vocab"},
		"bad merge":      {`{"model":{"type":"BPE","vocab":{"a":0},"merges":["a b"]}}`, "model.merges[0]"},
		"merge format":   {`{"model":{"type":"BPE","vocab":{"a":0},"merges":["ab"]}}`, "model.merges[0]"},
		"normalizer":     {strings.Replace(good, `"normalizer":null`, `"normalizer":{"type":"Precompiled"}`, 1), `normalizer: normalizer type "Precompiled"`},
		"bad regex":      {`{"model":{"type":"BPE","vocab":{"a":0}},"pre_tokenizer":{"type":"Split","pattern":{"Regex":"(("},"behavior":"Isolated"}}`, "regex"},
		"decoder":        {strings.Replace(good, `"decoder":{"type":"ByteLevel"}`, `"decoder":{"type":"CTC"}`, 1), `decoder type "CTC"`},
		"unk missing":    {`{"model":{"type":"BPE","vocab":{"a":0},"unk_token":"<unk>"}}`, "unk_token"},
		"negative id":    {`{"model":{"type":"BPE","vocab":{"a":-1}}}`, "out of range"},
		"template token": {`{"model":{"type":"BPE","vocab":{"a":0}},"post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>"}}],"special_tokens":{}}}`, "<s>"},
	}
	for name, c := range cases {
		_, err := Parse([]byte(c.doc), nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: want error containing %q, got %v", name, c.want, err)
		}
	}
	if _, err := Load(t.TempDir()); err == nil || !strings.Contains(err.Error(), "tokenizer.json") {
		t.Errorf("missing file: %v", err)
	}
	dir := writeDir(t, synthByteLevel(t), `{"tokenizer_class":"LlamaTokenizer","bos_token":"<nope>"}`)
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "bos_token") {
		t.Errorf("bad bos: %v", err)
	}
}

// TestMetaSplitEquivalence checks that cutting SentencePiece pieces at ▁ boundaries gives the same ids as
// merging whole segments.
func TestMetaSplitEquivalence(t *testing.T) {
	stories, err := loadShared(filepath.Join(testenv.Testdata(t), "models", "stories260K"))
	if err != nil {
		t.Fatal(err)
	}
	toks := []*Tokenizer{mustParse(t, synthSentencePiece(t), ""), stories}
	if shared := testenv.Shared(); shared != "" {
		for _, dir := range []string{"tokenizers/llama2", "tokenizers/gemma3"} {
			tok, err := loadShared(filepath.Join(shared, dir))
			if err != nil {
				t.Fatal(err)
			}
			toks = append(toks, tok)
		}
	}
	r := rand.New(rand.NewPCG(5, 6))
	words := []string{"the", " ", "  ", "once", "upon", "a", "time", "日本", ">", "</", "<", "\n", ".", "▁", "x", "é", "world", "Lily"}
	for _, tok := range toks {
		m := tok.model
		plain := &bpe{vocab: m.vocab, merges: m.merges, unkID: m.unkID, fuseUnk: m.fuseUnk, byteFallback: m.byteFallback,
			ignoreMerges: m.ignoreMerges, contPrefix: m.contPrefix, eowSuffix: m.eowSuffix}
		plain.init()
		plainTok := *tok
		plainTok.model = plain
		for i := 0; i < 300; i++ {
			var sb strings.Builder
			for k := r.IntN(20); k >= 0; k-- {
				sb.WriteString(words[r.IntN(len(words))])
			}
			s := sb.String()
			if a, b := tok.Encode(s, false), plainTok.Encode(s, false); !slices.Equal(a, b) {
				t.Fatalf("%q: split %v, whole %v", s, a, b)
			}
		}
	}
}

func TestSynthMetaspace(t *testing.T) {
	tok := mustParse(t, synthMetaspace(t), "")
	for _, s := range []string{"once the world", "a  b", "日本 x", "x<s> y"} {
		ids := tok.Encode(s, false)
		if got, want := streamAll(tok, ids, false), tok.Decode(ids, false); got != want {
			t.Fatalf("%q: stream %q decode %q", s, got, want)
		}
	}
	if got := tok.Decode(tok.Encode("once the world", false), false); got != "once the world" {
		t.Fatalf("round trip %q", got)
	}
	// prepend_scheme "first": the segment after an added token gets no ▁.
	if ids := tok.Encode("<s>a", false); len(ids) != 2 || ids[1] != tok.mustID(t, "a") {
		t.Fatalf("first scheme %v", ids)
	}
}

func TestConcurrentEncode(t *testing.T) {
	tok := mustParse(t, synthByteLevel(t), "")
	want := tok.Encode("the world says hello 123 times", true)
	done := make(chan []int)
	for g := 0; g < 8; g++ {
		go func() {
			var got []int
			for i := 0; i < 200; i++ {
				got = tok.Encode("the world says hello 123 times", true)
				tok.Decode(got, false)
			}
			done <- got
		}()
	}
	for g := 0; g < 8; g++ {
		if got := <-done; !slices.Equal(got, want) {
			t.Fatalf("got %v want %v", got, want)
		}
	}
}

func TestConfigClassDefaults(t *testing.T) {
	c, err := parseConfig([]byte(`{"tokenizer_class":"LlamaTokenizerFast","eos_token":null}`), "x", "")
	if err != nil {
		t.Fatal(err)
	}
	if c.BOSToken != "<s>" || c.EOSToken != "" || c.UnkToken != "<unk>" || !c.AddBOSToken || c.AddEOSToken {
		t.Fatalf("%+v", c)
	}
	c, err = parseConfig([]byte(`{"tokenizer_class":"GemmaTokenizer","add_bos_token":false}`), "x", "")
	if err != nil {
		t.Fatal(err)
	}
	if c.BOSToken != "<bos>" || c.EOSToken != "<eos>" || c.AddBOSToken {
		t.Fatalf("%+v", c)
	}
	c, err = parseConfig([]byte(`{"tokenizer_class":"Qwen2Tokenizer"}`), "x", "")
	if err != nil {
		t.Fatal(err)
	}
	if c.BOSToken != "" || c.AddBOSToken {
		t.Fatalf("%+v", c)
	}
}

func TestStreamPrime(t *testing.T) {
	tok := mustParse(t, synthSentencePiece(t), `{"clean_up_tokenization_spaces":true}`)
	prompt := tok.Encode("once the", false)
	gen := tok.Encode(" world once", false)[1:] // "▁wor", "l", "d", "▁once" without the segment's extra ▁
	d := tok.NewStreamDecoder(false)
	d.Prime(prompt)
	got := ""
	for _, id := range gen {
		got += d.Add(id)
	}
	got += d.Flush()
	full := tok.Decode(append(slices.Clone(prompt), gen...), false)
	if want := strings.TrimPrefix(full, tok.Decode(prompt, false)); got != want {
		t.Fatalf("primed stream %q, want %q", got, want)
	}
}

// A prompt ending in a byte-fallback token (stories260K's "\n" is <0x0A>) must not leak that byte into the
// first generated piece.
func TestStreamPrimeByteFallbackTail(t *testing.T) {
	tok, err := Load(filepath.Join(testenv.Testdata(t), "models", "stories260K"))
	if err != nil {
		t.Fatal(err)
	}
	prompt := tok.Encode("### user:\nWhat is 1+1?\n### assistant:\n", false)
	gen := tok.Encode("Once upon a time", false)
	d := tok.NewStreamDecoder(true)
	d.Prime(prompt)
	got := ""
	for _, id := range gen {
		got += d.Add(id)
	}
	got += d.Flush()
	full := tok.Decode(append(slices.Clone(prompt), gen...), true)
	if want := strings.TrimPrefix(full, tok.Decode(prompt, true)); got != want {
		t.Fatalf("primed stream %q, want %q", got, want)
	}
}

func TestEncodeLimit(t *testing.T) {
	tok := mustParse(t, synthByteLevel(t), `{"bos_token":"<|bos|>","eos_token":{"__type":"AddedToken","content":"<|eos|>"}}`)
	text := strings.Repeat("the world <think>x</think> café\n", 50)
	for _, special := range []bool{false, true} {
		full := tok.Encode(text, special)
		for _, limit := range []int{0, 1, 7, len(full) - 1, len(full), len(full) + 10} {
			ids, ok := tok.EncodeLimit(text, special, limit)
			if ok != (len(full) <= limit) {
				t.Fatalf("limit %d of %d: ok %v", limit, len(full), ok)
			}
			if ok && !slices.Equal(ids, full) {
				t.Fatalf("limit %d: ids differ from Encode", limit)
			}
			if !ok && (len(ids) <= limit || !slices.Equal(ids, full[:len(ids)]) || len(ids) > limit+64) {
				t.Fatalf("limit %d: stopped at %d ids, not a short prefix past the limit", limit, len(ids))
			}
		}
	}
}
