package review

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/lorakit/lorakit/train/data"
)

// previewRunes bounds the prompt and answer previews of the table.
const previewRunes = 100

// item is one example of the scored file as the table shows it; the full text is read again on demand.
type item struct {
	line    int
	off     int64 // byte offset of the line in the scored file
	size    int   // its length in bytes, without the newline
	hash    string
	format  string
	err     string // the score's error (a bad line) or why the line is unreadable
	prompt  string // the first user message, cut to previewRunes
	answer  string // the last assistant message, cut to previewRunes
	flags   []string
	scores  []float64 // parallel to index.fields; NaN where the example has no such score
	example bool      // the line holds an example (not only a score with an error)
}

// index is what the table needs of every line of a scored file.
type index struct {
	items  []item
	byLine map[int]int // line → position in items
	fields []string    // every numeric field of the score objects, nested ones as "labels.name", in first-seen order
}

// buildIndex reads a scored file once, parsing its lines on every core. Memory is the previews and scores,
// not the examples.
func buildIndex(path string) (*index, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("review: %w", err)
	}
	defer f.Close()
	type parsed struct {
		it  item
		kvs []numField
	}
	type batch struct {
		lines [][]byte
		items []item // line numbers and offsets, filled by the reader
		out   []parsed
		done  chan struct{}
	}
	workers := runtime.GOMAXPROCS(0)
	todo := make(chan *batch, 2*workers)
	inOrder := make(chan *batch, 2*workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range todo {
				b.out = make([]parsed, len(b.lines))
				for k, line := range b.lines {
					it, score := readItem(path, b.items[k].line, line)
					it.off, it.size = b.items[k].off, b.items[k].size
					b.out[k].it = it
					if score != nil {
						b.out[k].kvs, _ = numericFields(score)
					}
				}
				close(b.done)
			}
		}()
	}
	readErr := make(chan error, 1)
	go func() {
		defer close(inOrder)
		defer close(todo)
		readErr <- readBatches(f, path, func(lines [][]byte, items []item) {
			b := &batch{lines: lines, items: items, done: make(chan struct{})}
			todo <- b
			inOrder <- b
		})
	}()
	ix := &index{byLine: map[int]int{}}
	fieldAt := map[string]int{}
	for b := range inOrder { // fields are named in file order, whatever order the workers finish in
		<-b.done
		for _, p := range b.out {
			p.it.scores = ix.scoresOf(p.kvs, fieldAt)
			ix.byLine[p.it.line] = len(ix.items)
			ix.items = append(ix.items, p.it)
		}
	}
	wg.Wait()
	if err := <-readErr; err != nil {
		return nil, err
	}
	for i := range ix.items { // pad the early items' scores to the fields found later
		for len(ix.items[i].scores) < len(ix.fields) {
			ix.items[i].scores = append(ix.items[i].scores, math.NaN())
		}
	}
	if len(ix.items) == 0 {
		return nil, fmt.Errorf("review: %s has no lines", path)
	}
	return ix, nil
}

// readBatches reads the non-blank lines of f in batches of about 1 MiB, each with its line numbers and offsets.
func readBatches(f *os.File, path string, emit func(lines [][]byte, items []item)) error {
	br := bufio.NewReaderSize(f, 1<<20)
	var off int64
	var lines [][]byte
	var items []item
	bytesIn := 0
	for n := 1; ; n++ {
		b, err := br.ReadBytes('\n')
		if err != nil && err != io.EOF {
			return fmt.Errorf("review: %s:%d: %w", path, n, err)
		}
		if len(b) == 0 && err == io.EOF {
			break
		}
		line := bytes.TrimRight(b, "\r\n")
		if len(line) > data.MaxLineBytes {
			return fmt.Errorf("review: %s:%d: line longer than %d bytes", path, n, data.MaxLineBytes)
		}
		if len(bytes.TrimSpace(line)) > 0 {
			lines = append(lines, line)
			items = append(items, item{line: n, off: off, size: len(line)})
			bytesIn += len(line)
		}
		off += int64(len(b))
		if bytesIn >= 1<<20 {
			emit(lines, items)
			lines, items, bytesIn = nil, nil, 0
		}
		if err == io.EOF {
			break
		}
	}
	if len(lines) > 0 {
		emit(lines, items)
	}
	return nil
}

// readItem parses one scored line into its table row, and returns its score object for scoresOf. The
// example is parsed once (a large file is read in one pass at start).
func readItem(path string, n int, line []byte) (item, json.RawMessage) {
	raw, sc, err := data.SplitScored(line)
	it := item{line: n, hash: data.ExampleHashOf(line, raw, err)}
	if err != nil {
		it.err = "unreadable scored line: " + err.Error()
		return it, nil
	}
	score := scoreObject(line)
	it.format, it.err = sc.Format, sc.Error
	if raw == nil {
		return it, score
	}
	ex, lerr := data.ParseLine(raw, path, n)
	if lerr != nil {
		if it.err == "" {
			it.err = lerr.Reason
		}
		return it, score
	}
	it.example, it.format = true, ex.Format
	it.prompt, it.answer = previews(ex)
	if ex.HasReasoning() {
		it.flags = append(it.flags, "reasoning")
	}
	if ex.UsesTools() {
		it.flags = append(it.flags, "tools")
	}
	return it, score
}

// scoreObject is the text of the line's "score" value: read alone when it is the first key (as data score
// writes it), else from the whole object.
func scoreObject(line []byte) json.RawMessage {
	dec := json.NewDecoder(bytes.NewReader(line))
	if t, err := dec.Token(); err == nil && t == json.Delim('{') {
		if k, err := dec.Token(); err == nil && k == "score" {
			var raw json.RawMessage
			if dec.Decode(&raw) == nil {
				return raw
			}
			return nil
		}
	}
	var top struct {
		Score json.RawMessage `json:"score"`
	}
	if json.Unmarshal(line, &top) != nil {
		return nil
	}
	return top.Score
}

// previews are the first user message and the last assistant message, cut short.
func previews(ex *data.Example) (prompt, answer string) {
	if ex.Format == data.FormatText {
		return cut(ex.Text), ""
	}
	for _, m := range ex.Messages {
		if m.Role == "user" {
			prompt = cut(m.Content)
			break
		}
	}
	for i := len(ex.Messages) - 1; i >= 0; i-- {
		if m := ex.Messages[i]; m.Role == "assistant" {
			answer = cut(m.Content)
			break
		}
	}
	return prompt, answer
}

func cut(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= previewRunes {
		return s
	}
	r := []rune(s)
	return string(r[:previewRunes]) + "…"
}

// scoresOf places a line's numeric score fields in the columns of ix.fields, adding new names.
func (ix *index) scoresOf(kvs []numField, fieldAt map[string]int) []float64 {
	if kvs == nil {
		return nil
	}
	scores := make([]float64, len(ix.fields))
	for i := range scores {
		scores[i] = math.NaN()
	}
	for _, kv := range kvs {
		j, ok := fieldAt[kv.name]
		if !ok {
			j = len(ix.fields)
			fieldAt[kv.name] = j
			ix.fields = append(ix.fields, kv.name)
		}
		for len(scores) <= j {
			scores = append(scores, math.NaN())
		}
		scores[j] = kv.v
	}
	return scores
}

type numField struct {
	name string
	v    float64
}

// numericFields lists the numbers of a score object in their order, nested objects as "outer.inner"
// ("labels.educational"); "line" (the row's own key) and non-numbers are left out.
func numericFields(raw json.RawMessage) ([]numField, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var out []numField
	var walk func(prefix string, depth int) error
	walk = func(prefix string, depth int) error {
		if depth > 4 {
			return errors.New("score nested too deep")
		}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return err
			}
			name := prefix + fmt.Sprint(k)
			t, err := dec.Token()
			if err != nil {
				return err
			}
			switch v := t.(type) {
			case json.Number:
				if f, err := v.Float64(); err == nil && name != "line" {
					out = append(out, numField{name, f})
				}
			case json.Delim:
				if v == '{' {
					if err := walk(name+".", depth+1); err != nil {
						return err
					}
				} else if err := skip(dec); err != nil {
					return err
				}
				if _, err := dec.Token(); err != nil { // the closing delimiter
					return err
				}
			}
		}
		return nil
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errors.New("score is not an object")
	}
	if err := walk("", 0); err != nil {
		return nil, err
	}
	return out, nil
}

// skip consumes the rest of an array whose '[' was just read, up to (not including) its ']'.
func skip(dec *json.Decoder) error {
	depth := 0
	for dec.More() || depth > 0 {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		if d, ok := t.(json.Delim); ok {
			switch d {
			case '[', '{':
				depth++
			case ']', '}':
				depth--
			}
		}
	}
	return nil
}

// readLine reads line n's bytes from the scored file again and checks they are still what was indexed.
func (ix *index) readLine(f *os.File, it *item) ([]byte, error) {
	b := make([]byte, it.size)
	if _, err := f.ReadAt(b, it.off); err != nil {
		return nil, fmt.Errorf("review: reading line %d: %w", it.line, err)
	}
	if data.ExampleHash(b) != it.hash {
		return nil, fmt.Errorf("review: line %d of the scored file changed since the review started; restart lorakit data review", it.line)
	}
	return b, nil
}
