package serve

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/lorakit/lorakit/models/chat"
	"github.com/lorakit/lorakit/models/grammar"
	"github.com/lorakit/lorakit/models/stop"
	"github.com/lorakit/lorakit/serve/backend"
	"github.com/lorakit/lorakit/serve/engine"
	"github.com/lorakit/lorakit/serve/openai"
)

// fakeModel is a byte-level toy model: ids 0..255 are bytes, 256 is EOS, 257 BOS. The base model emits
// letters derived from the sequence so far; an adapter emits its script then EOS.
type fakeModel struct {
	reasoning bool
	// toolParser is what ToolParser returns; noTools makes RenderChat fail as a template without tool support.
	toolParser string
	noTools    bool
	lastPrompt string
	ctxLen     int
	maxEncode  int // longest text Encode was given
	mu         sync.Mutex
	forwards   int
	block      chan struct{} // if set, Forward waits on it (or on done)
	done       chan struct{}
}

const (
	fEOS   = 256
	fBOS   = 257
	fVocab = 258
)

type fakeAdapter struct {
	script string
	shift  int
	nan    bool // its rows' logits are NaN (a corrupt adapter)
}

func (fakeAdapter) Apply(string, []float32, []float32, int, int) {}

type fakeState struct {
	toks []int
	gen  int
}

func (s *fakeState) Len() int { return len(s.toks) }

func (m *fakeModel) NewState(int) engine.State { return &fakeState{} }
func (m *fakeModel) VocabSize() int            { return fVocab }
func (m *fakeModel) Forward(rows []engine.Row) ([][]float32, error) {
	if m.block != nil {
		select {
		case <-m.block:
		case <-m.done:
		}
	}
	m.mu.Lock()
	m.forwards++
	m.mu.Unlock()
	out := make([][]float32, len(rows))
	for i, r := range rows {
		st := r.State.(*fakeState)
		st.toks = append(st.toks, r.Tokens...)
		out[i] = make([]float32, fVocab)
		out[i][fakeNextTok(st, r.Adapter)] = 5
		if a, ok := r.Adapter.(*fakeAdapter); ok && a.nan {
			out[i][7] = float32(math.NaN())
		}
	}
	return out, nil
}

// fakeNextTok: one call per Forward row; counts generated positions via the first token after the prompt.
func fakeNextTok(st *fakeState, d engine.Delta) int {
	a, _ := d.(*fakeAdapter)
	if a != nil && a.script != "" {
		// position in the script = tokens after the prompt; the prompt ends with '\x01' marker length unknown,
		// so the state counts generated tokens itself.
		i := st.gen
		st.gen++
		if i < len(a.script) {
			return int(a.script[i])
		}
		return fEOS
	}
	sum := 0
	for _, t := range st.toks {
		sum += t
	}
	if a != nil {
		sum += a.shift
	}
	return 'a' + sum%26
}

func (m *fakeModel) Encode(text string, addSpecial bool) []int {
	m.mu.Lock()
	m.maxEncode = max(m.maxEncode, len(text))
	m.mu.Unlock()
	var ids []int
	if addSpecial {
		ids = append(ids, fBOS)
	}
	for i := 0; i < len(text); i++ {
		ids = append(ids, int(text[i]))
	}
	return ids
}
func (m *fakeModel) Decode(ids []int) string {
	var b []byte
	for _, id := range ids {
		if id < 256 {
			b = append(b, byte(id))
		}
	}
	return string(b)
}

type fakeDecoder struct{}

func (fakeDecoder) Add(id int) string {
	if id < 256 {
		return string([]byte{byte(id)})
	}
	return ""
}
func (fakeDecoder) Flush() string { return "" }

func (m *fakeModel) NewDecoder([]int) engine.Decoder { return fakeDecoder{} }
func (m *fakeModel) TokenText(id int) string {
	if id < 256 {
		return string([]byte{byte(id)})
	}
	return "<special>"
}
func (m *fakeModel) RenderChat(msgs []openai.Message, tools, kwargs json.RawMessage) (string, error) {
	var b strings.Builder
	if tools != nil {
		if m.noTools {
			return "", fmt.Errorf("tools: %w (it ignores the tools list)", chat.ErrTemplateNoTools)
		}
		b.WriteString("tools: " + string(tools) + "\n")
	}
	for _, msg := range msgs {
		if msg.Content == "FAIL-TEMPLATE" {
			return "", errors.New("template raised")
		}
		b.WriteString(msg.Role + ": " + msg.Content)
		for _, c := range msg.ToolCalls {
			b.WriteString(" call " + c.ID + " " + c.Name + c.Arguments)
		}
		if msg.ToolCallID != "" {
			b.WriteString(" (result of " + msg.ToolCallID + ")")
		}
		b.WriteString("\n")
	}
	b.WriteString("assistant: ")
	if m.reasoning && !strings.Contains(string(kwargs), `"enable_thinking":false`) {
		b.WriteString("<think>\n")
	}
	m.mu.Lock()
	m.lastPrompt = b.String()
	m.mu.Unlock()
	return b.String(), nil
}
func (m *fakeModel) ToolParser() string      { return m.toolParser }
func (m *fakeModel) SupportsReasoning() bool { return m.reasoning }
func (m *fakeModel) EOS() []int              { return []int{fEOS} }
func (m *fakeModel) TurnEnd() stop.Turn      { return stop.Turn{} }
func (m *fakeModel) Logprobs(logits []float32, id, top int) engine.TokenLogprob {
	return backend.Logprobs(logits, id, top)
}
func (m *fakeModel) NewSampler(engine.SamplingParams) engine.Sampler {
	return argmax{}
}
func (m *fakeModel) ContextLen() int {
	if m.ctxLen > 0 {
		return m.ctxLen
	}
	return 512
}

// LoadAdapter reads script.txt (the adapter's fixed output) or shift.txt from the folder.
func (m *fakeModel) LoadAdapter(path string) (engine.Delta, error) {
	if _, err := os.Stat(filepath.Join(path, "adapter_config.json")); err != nil {
		return nil, err
	}
	if b, err := os.ReadFile(filepath.Join(path, "mismatch")); err == nil {
		return nil, errors.New(string(b))
	}
	a := &fakeAdapter{shift: 1}
	if _, err := os.Stat(filepath.Join(path, "nan")); err == nil {
		a.nan = true
	}
	if b, err := os.ReadFile(filepath.Join(path, "script.txt")); err == nil {
		a.script = string(b)
	}
	return a, nil
}

type argmax struct{}

func (argmax) Sample(l []float32, _ []int) int {
	best := 0
	for i, v := range l {
		if v > l[best] {
			best = i
		}
	}
	return best
}

// writeFakeAdapter makes an adapter folder whose output is script.
func writeFakeAdapter(t testing.TB, dir, script string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "adapter_config.json"), []byte(`{"peft_type":"LORA"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "adapter_model.safetensors"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if script != "" {
		if err := os.WriteFile(filepath.Join(dir, "script.txt"), []byte(script), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func osWriteFile(p, s string) error { return os.WriteFile(p, []byte(s), 0o644) }

// fakeVocab: ids 0..255 are their byte, EOS and BOS have no bytes.
var fakeVocab = sync.OnceValue(func() *grammar.Vocab {
	toks := make([][]byte, fVocab)
	for i := range 256 {
		toks[i] = []byte{byte(i)}
	}
	return grammar.NewVocab(toks, []int{fEOS})
})

func (m *fakeModel) Constrain(g *grammar.Grammar) engine.Constraint { return g.NewMatcher(fakeVocab()) }

func (m *fakeModel) TokenBytes(id int) []byte {
	if id < 256 {
		return []byte{byte(id)}
	}
	return nil
}

func (m *fakeModel) Pieces(ids []int) [][]byte {
	out := make([][]byte, len(ids))
	for i, id := range ids {
		out[i] = m.TokenBytes(id)
	}
	return out
}
