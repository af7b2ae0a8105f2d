// Package data reads supervised fine-tuning (SFT) data and turns it into token ids and loss masks.
//
// One JSONL reader serves training, evaluation and `lorakit data`. Each line is one example in one of
// six shapes (detected by its keys, unknown keys ignored; lines of one file may mix shapes):
//
//	prompt_response            {"prompt": "...", "response": "..."}            ("completion" is accepted for "response")
//	prompt_reasoning_response  {"prompt": "...", "reasoning_content": "...", "response": "..."}
//	messages                   {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": "...",
//	                                           "reasoning_content": "...", "tool_calls": [...], "weight": 0|1}, ...],
//	                            "tools": [...]}   (function calling, see tools.go)
//	alpaca                     {"instruction": "...", "input": "...", "output": "..."}   (user text = instruction
//	                                                                                         + "\n" + input when input is set)
//	sharegpt                   {"conversations": [{"from": "system"|"human"|"gpt"|"function_call"|"observation"|"tool",
//	                                                "value": "..."}, ...], "system": "...", "tools": [...]}
//	                            (see sharegpt.go: mapped to the messages shape as axolotl and LLaMA-Factory map it)
//	text                       {"text": "..."}   continued pre-training: no chat template, the tokenizer's
//	                            special tokens (BOS) added, EOS appended, loss on every token
//
// The prompt/response, alpaca and sharegpt shapes also take an optional "system" string. Every shape but
// text becomes a list of chat.Message: an optional system message, then user/assistant turns alternating, starting with
// a user turn and ending with an assistant turn; in the messages shape an assistant turn that makes tool
// calls is followed by the "tool" results before the next assistant turn. A line that breaks any rule is
// reported as a *LineError naming the file, the 1-based line number, the field and the reason.
package data

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"

	"github.com/lorakit/lorakit/models/chat"
)

// Format names reported in Example.Format.
const (
	FormatPromptResponse          = "prompt_response"
	FormatPromptReasoningResponse = "prompt_reasoning_response"
	FormatMessages                = "messages"
	FormatAlpaca                  = "alpaca"
	FormatShareGPT                = "sharegpt"
	FormatText                    = "text"
)

// MaxLineBytes bounds one JSONL line; longer lines are reported bad and skipped without being held in memory.
const MaxLineBytes = 64 << 20

// Example is one parsed line.
type Example struct {
	Line     int             // 1-based line number
	Format   string          // one of the Format constants
	Messages []chat.Message  // system?, (user, assistant)+; tool results after an assistant's tool calls; nil for text
	Text     string          // the FormatText document ("" for every other shape)
	Raw      json.RawMessage // the line as read (no trailing newline)
	// Tools is the top-level "tools" list (a JSON array of {"type":"function","function":{...}}) handed to
	// the chat template as `tools`; nil when absent or empty.
	Tools json.RawMessage
	// Extra is parallel to Messages and holds tool calls, tool_call_id, name and weight; nil when no
	// message has any of them.
	Extra []MessageExtra
}

// HasReasoning reports whether an assistant message carries reasoning_content.
func (ex *Example) HasReasoning() bool {
	for _, m := range ex.Messages {
		if m.Role == "assistant" && m.ReasoningContent != "" {
			return true
		}
	}
	return false
}

// LineError reports a bad line.
type LineError struct {
	File   string
	Line   int
	Reason string
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Reason) }

// ReadJSONL reads path line by line and calls fn for every line: fn(ex, nil) for a good line,
// fn(nil, *LineError) for a bad one. Blank lines are reported as bad ("empty line"). If fn returns an
// error, reading stops and that error is returned. With strict, the first bad line is also returned (as
// the *LineError) after fn has seen it. Memory stays bounded by the longest line (at most MaxLineBytes).
func ReadJSONL(path string, strict bool, fn func(ex *Example, err error) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("data: %w", err)
	}
	defer f.Close()
	return ReadJSONLFrom(f, path, strict, fn)
}

// ReadJSONLFrom is ReadJSONL over an open reader; name is used in errors.
func ReadJSONLFrom(r io.Reader, name string, strict bool, fn func(ex *Example, err error) error) error {
	br := bufio.NewReaderSize(r, 1<<20)
	line := 0
	for {
		b, tooLong, err := readLine(br)
		if err == io.EOF && b == nil {
			return nil
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("data: %s: line %d: %w", name, line+1, err)
		}
		line++
		if line == 1 {
			b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf")) // a UTF-8 byte order mark
		}
		var ex *Example
		var lerr *LineError
		if tooLong {
			lerr = &LineError{File: name, Line: line, Reason: fmt.Sprintf("line longer than %d bytes", MaxLineBytes)}
		} else {
			ex, lerr = ParseLine(b, name, line)
		}
		var ferr error
		if lerr != nil {
			ferr = fn(nil, lerr)
		} else {
			ferr = fn(ex, nil)
		}
		if ferr != nil {
			return ferr
		}
		if lerr != nil && strict {
			return lerr
		}
		if err == io.EOF {
			return nil
		}
	}
}

// readLine returns the next line without its "\n" (and "\r"). A line over MaxLineBytes is consumed and
// reported with tooLong. At end of input it returns (nil, false, io.EOF); a last line without a newline is
// returned with io.EOF.
func readLine(br *bufio.Reader) (line []byte, tooLong bool, err error) {
	var buf []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(buf)+len(chunk) > MaxLineBytes {
			tooLong = true
			buf = buf[:0]
		} else {
			buf = append(buf, chunk...)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			if len(buf) == 0 && !tooLong {
				return nil, false, io.EOF
			}
			return trimEOL(buf), tooLong, io.EOF
		}
		if err != nil {
			return nil, false, err
		}
		return trimEOL(buf), tooLong, nil
	}
}

func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if b == nil {
		b = []byte{}
	}
	return b
}

// ParseLine parses one JSONL line (without the newline). file and line only label the error.
func ParseLine(b []byte, file string, line int) (*Example, *LineError) {
	bad := func(format string, args ...any) (*Example, *LineError) {
		return nil, &LineError{File: file, Line: line, Reason: fmt.Sprintf(format, args...)}
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return bad("empty line")
	}
	if !utf8.Valid(b) {
		off := 0
		for off < len(b) {
			r, n := utf8.DecodeRune(b[off:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			off += n
		}
		return bad("invalid UTF-8 at byte %d", off+1)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) {
			return bad("invalid JSON: not an object")
		}
		return bad("invalid JSON: %s", jsonErrText(err))
	}
	if obj == nil {
		return bad("invalid JSON: not an object")
	}
	ex := &Example{Line: line, Raw: append(json.RawMessage(nil), b...)}
	var err error
	switch {
	case has(obj, "messages"):
		ex.Format = FormatMessages
		if ex.Tools, err = parseTools(obj["tools"]); err == nil {
			ex.Messages, ex.Extra, err = parseMessages(obj["messages"])
		}
	case has(obj, "conversations"):
		ex.Format = FormatShareGPT
		ex.Tools, ex.Messages, ex.Extra, err = parseShareGPT(obj)
	case has(obj, "prompt"):
		ex.Messages, ex.Format, err = parsePromptResponse(obj)
	case has(obj, "instruction"):
		ex.Format = FormatAlpaca
		ex.Messages, err = parseAlpaca(obj)
	case has(obj, "text"):
		ex.Format = FormatText
		ex.Text, err = parseText(obj)
	case has(obj, "response") || has(obj, "completion"):
		err = errors.New(`missing field "prompt"`)
	case has(obj, "output"):
		err = errors.New(`missing field "instruction"`)
	default:
		err = errors.New(`unknown format: no "messages", "conversations", "prompt", "instruction" or "text" field`)
	}
	if err == nil && ex.Format != FormatMessages && ex.Format != FormatShareGPT && !isNull(obj["tools"]) {
		err = errors.New(`field "tools": only the "messages" and "conversations" formats carry tools`)
	}
	if err != nil {
		return bad("%s", err.Error())
	}
	return ex, nil
}

func jsonErrText(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s (at byte %d)", se.Error(), se.Offset)
	}
	return err.Error()
}

func has(obj map[string]json.RawMessage, key string) bool {
	_, ok := obj[key]
	return ok
}

// str reads an optional string field: absent or null gives ("", false).
func str(obj map[string]json.RawMessage, key string) (string, bool, error) {
	raw, ok := obj[key]
	if !ok || string(bytes.TrimSpace(raw)) == "null" {
		return "", false, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false, fmt.Errorf("field %q: not a string", key)
	}
	return s, true, nil
}

// required reads a string field that must be present.
func required(obj map[string]json.RawMessage, key string) (string, error) {
	s, ok, err := str(obj, key)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("missing field %q", key)
	}
	return s, nil
}

func isBlank(s string) bool { return strings.TrimSpace(s) == "" }

func parsePromptResponse(obj map[string]json.RawMessage) ([]chat.Message, string, error) {
	prompt, err := required(obj, "prompt")
	if err != nil {
		return nil, "", err
	}
	respKey := "response"
	if !has(obj, "response") && has(obj, "completion") {
		respKey = "completion"
	}
	resp, err := required(obj, respKey)
	if err != nil {
		return nil, "", err
	}
	reasoning, hasReasoning, err := str(obj, "reasoning_content")
	if err != nil {
		return nil, "", err
	}
	system, _, err := str(obj, "system")
	if err != nil {
		return nil, "", err
	}
	if isBlank(resp) {
		return nil, "", fmt.Errorf("empty response (field %q)", respKey)
	}
	format := FormatPromptResponse
	if hasReasoning {
		format = FormatPromptReasoningResponse
	}
	var msgs []chat.Message
	if system != "" {
		msgs = append(msgs, chat.Message{Role: "system", Content: system})
	}
	msgs = append(msgs, chat.Message{Role: "user", Content: prompt},
		chat.Message{Role: "assistant", Content: resp, ReasoningContent: reasoning})
	return msgs, format, nil
}

func parseAlpaca(obj map[string]json.RawMessage) ([]chat.Message, error) {
	instr, err := required(obj, "instruction")
	if err != nil {
		return nil, err
	}
	input, _, err := str(obj, "input")
	if err != nil {
		return nil, err
	}
	out, err := required(obj, "output")
	if err != nil {
		return nil, err
	}
	system, _, err := str(obj, "system")
	if err != nil {
		return nil, err
	}
	if isBlank(out) {
		return nil, errors.New(`empty response (field "output")`)
	}
	user := instr
	if input != "" {
		user = instr + "\n" + input
	}
	var msgs []chat.Message
	if system != "" {
		msgs = append(msgs, chat.Message{Role: "system", Content: system})
	}
	return append(msgs, chat.Message{Role: "user", Content: user}, chat.Message{Role: "assistant", Content: out}), nil
}

// parseText reads the text shape's document, which must not be blank.
func parseText(obj map[string]json.RawMessage) (string, error) {
	text, err := required(obj, "text")
	if err != nil {
		return "", err
	}
	if isBlank(text) {
		return "", errors.New(`empty text (field "text")`)
	}
	return text, nil
}

func parseMessages(raw json.RawMessage) ([]chat.Message, []MessageExtra, error) {
	var items []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, nil, errors.New(`field "messages": not an array of objects`)
	}
	return parseMessageItems(items, "messages")
}

// parseMessageItems checks and converts OpenAI-shaped message objects; field names the list in errors
// ("messages", or "conversations" for ShareGPT lines converted to this shape).
func parseMessageItems(items []map[string]json.RawMessage, field string) ([]chat.Message, []MessageExtra, error) {
	if len(items) == 0 {
		return nil, nil, fmt.Errorf("field %q: empty", field)
	}
	msgs := make([]chat.Message, 0, len(items))
	var extra []MessageExtra // allocated when a message has tool calls, tool fields or a weight
	tools := false
	for i, it := range items {
		if it == nil {
			return nil, nil, fmt.Errorf("%s[%d]: not an object", field, i)
		}
		m, e, hasWeight, err := parseMessage(it)
		if err != nil {
			return nil, nil, fmt.Errorf("%s[%d]: %v", field, i, err)
		}
		if len(e.ToolCalls) > 0 || e.NullContent || e.NoLoss || e.ToolCallID != "" || e.Name != "" || hasWeight {
			if extra == nil {
				extra = make([]MessageExtra, len(items))
			}
			extra[i] = e
		}
		tools = tools || m.Role == "tool" || len(e.ToolCalls) > 0
		msgs = append(msgs, m)
	}
	check := checkOrder
	if tools {
		check = func(msgs []chat.Message) error { return checkToolOrder(msgs, extra) }
	}
	if err := check(msgs); err != nil {
		return nil, nil, err
	}
	if err := checkWeights(msgs, extra); err != nil {
		return nil, nil, err
	}
	return msgs, extra, nil
}

// parseMessage reads one message object; errors name the field.
func parseMessage(it map[string]json.RawMessage) (m chat.Message, e MessageExtra, hasWeight bool, err error) {
	var role string
	role, err = required(it, "role")
	if err != nil {
		return chat.Message{}, e, false, err
	}
	switch role {
	case "system", "user", "assistant", "tool":
	default:
		return chat.Message{}, e, false, fmt.Errorf("unsupported role %q (want system, user, assistant or tool)", role)
	}
	tc, hasTC := it["tool_calls"]
	if role == "assistant" {
		if e.ToolCalls, err = parseToolCalls(tc, hasTC); err != nil {
			return chat.Message{}, e, false, err
		}
	} else if hasTC && !isNull(tc) {
		return chat.Message{}, e, false, fmt.Errorf(`field "tool_calls" on a %s message (only assistant messages make tool calls)`, role)
	}
	var noLoss bool
	noLoss, hasWeight, err = parseWeight(it)
	if err != nil {
		return chat.Message{}, e, false, err
	}
	if hasWeight && role != "assistant" {
		return chat.Message{}, e, false, fmt.Errorf(`field "weight" on a %s message (only assistant messages carry a weight)`, role)
	}
	e.NoLoss = noLoss
	var content string
	if c, ok := it["content"]; len(e.ToolCalls) > 0 && (!ok || isNull(c)) {
		e.NullContent = true // an assistant turn that only calls tools
	} else if content, err = messageContent(it); err != nil {
		return chat.Message{}, e, false, err
	}
	reasoning, _, err := str(it, "reasoning_content")
	if err != nil {
		return chat.Message{}, e, false, err
	}
	if reasoning != "" && role != "assistant" {
		return chat.Message{}, e, false, fmt.Errorf("reasoning_content on a %s message", role)
	}
	if role == "tool" {
		if e.ToolCallID, _, err = str(it, "tool_call_id"); err != nil {
			return chat.Message{}, e, false, err
		}
		if e.Name, _, err = str(it, "name"); err != nil {
			return chat.Message{}, e, false, err
		}
	}
	return chat.Message{Role: role, Content: content, ReasoningContent: reasoning}, e, hasWeight, nil
}

// checkOrder enforces: optional system first, then user/assistant alternating from user, ending with an
// assistant turn whose content is not blank.
func checkOrder(msgs []chat.Message) error {
	start := 0
	if msgs[0].Role == "system" {
		start = 1
	}
	if start == len(msgs) {
		return errors.New("wrong role order: no user/assistant turns after the system message")
	}
	for i := start; i < len(msgs); i++ {
		want := "user"
		if (i-start)%2 == 1 {
			want = "assistant"
		}
		if msgs[i].Role != want {
			return fmt.Errorf("wrong role order: messages[%d] is %q, want %q (optional system, then user/assistant alternating)", i, msgs[i].Role, want)
		}
	}
	last := msgs[len(msgs)-1]
	if last.Role != "assistant" {
		return fmt.Errorf("wrong role order: last message (messages[%d]) is %q, want \"assistant\"", len(msgs)-1, last.Role)
	}
	for i := start + 1; i < len(msgs); i += 2 {
		if isBlank(msgs[i].Content) {
			return fmt.Errorf("empty response (messages[%d])", i)
		}
	}
	return nil
}

// messageContent reads "content": a string, or an OpenAI list of parts whose text parts
// ({"type":"text","text":...}) are concatenated.
func messageContent(it map[string]json.RawMessage) (string, error) {
	raw, ok := it["content"]
	if !ok || string(bytes.TrimSpace(raw)) == "null" {
		return "", errors.New(`missing field "content"`)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var parts []struct {
		Type string  `json:"type"`
		Text *string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", errors.New(`field "content": not a string`)
	}
	var b strings.Builder
	for j, p := range parts {
		if p.Type != "text" || p.Text == nil {
			return "", fmt.Errorf(`field "content": part %d is not a text part (type %q)`, j, p.Type)
		}
		b.WriteString(*p.Text)
	}
	return b.String(), nil
}
