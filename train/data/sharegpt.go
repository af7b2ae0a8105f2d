package data

// The ShareGPT shape, as axolotl's and LLaMA-Factory's sharegpt loaders read it:
//
//	{"system": "...", "tools": "[{\"name\": ..., \"parameters\": {...}}]",
//	 "conversations": [
//	   {"from": "human", "value": "..."},
//	   {"from": "function_call", "value": "{\"name\": \"...\", \"arguments\": {...}}"},
//	   {"from": "observation", "value": "..."},
//	   {"from": "gpt", "value": "..."}]}
//
// Each turn becomes one message of the messages shape (so both encode to the same tokens and loss mask):
// human/user → user, gpt/assistant → assistant, system → system, observation/tool → tool, and
// function_call → an assistant message whose tool_calls are the call (or list of calls) in "value". The
// top-level "system" string becomes a leading system message; "tools" may be OpenAI tool objects or bare
// function definitions (LLaMA-Factory), as a list or a JSON string of one.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/lorakit/lorakit/models/chat"
)

// shareGPTRoles maps a turn's "from" to an OpenAI role; function_call is handled apart.
var shareGPTRoles = map[string]string{
	"human": "user", "user": "user",
	"gpt": "assistant", "assistant": "assistant",
	"system":      "system",
	"observation": "tool", "tool": "tool",
}

func parseShareGPT(obj map[string]json.RawMessage) (json.RawMessage, []chat.Message, []MessageExtra, error) {
	var turns []map[string]json.RawMessage
	if err := json.Unmarshal(obj["conversations"], &turns); err != nil {
		return nil, nil, nil, errors.New(`field "conversations": not an array of objects`)
	}
	items := make([]map[string]json.RawMessage, len(turns))
	for i, t := range turns {
		if t == nil {
			return nil, nil, nil, fmt.Errorf("conversations[%d]: not an object", i)
		}
		it, err := shareGPTTurn(t)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("conversations[%d]: %v", i, err)
		}
		items[i] = it
	}
	tools, err := shareGPTTools(obj["tools"])
	if err != nil {
		return nil, nil, nil, err
	}
	msgs, extra, err := parseMessageItems(items, "conversations")
	if err != nil {
		// the order checks name the list "messages"; the indices are the same
		return nil, nil, nil, errors.New(strings.ReplaceAll(err.Error(), "messages[", "conversations["))
	}
	system, _, err := str(obj, "system")
	if err != nil || system == "" {
		return tools, msgs, extra, err
	}
	if msgs[0].Role == "system" {
		return nil, nil, nil, errors.New(`field "system" and a "system" turn in "conversations": give one`)
	}
	msgs = append([]chat.Message{{Role: "system", Content: system}}, msgs...)
	if extra != nil {
		extra = append([]MessageExtra{{}}, extra...)
	}
	return tools, msgs, extra, nil
}

// shareGPTTurn converts one {"from","value"} turn to an OpenAI message object.
func shareGPTTurn(t map[string]json.RawMessage) (map[string]json.RawMessage, error) {
	from, err := required(t, "from")
	if err != nil {
		return nil, err
	}
	if _, ok := t["value"]; !ok {
		return nil, errors.New(`missing field "value"`)
	}
	it := map[string]json.RawMessage{}
	if w, ok := t["weight"]; ok {
		it["weight"] = w
	}
	if from == "function_call" {
		calls, err := shareGPTCalls(t["value"])
		if err != nil {
			return nil, err
		}
		it["role"], it["content"], it["tool_calls"] = json.RawMessage(`"assistant"`), json.RawMessage("null"), calls
		return it, nil
	}
	role, ok := shareGPTRoles[from]
	if !ok {
		return nil, fmt.Errorf(`unsupported "from" %q (want system, human, gpt, function_call, observation or tool)`, from)
	}
	if _, _, err := str(t, "value"); err != nil {
		return nil, err
	}
	it["role"], _ = json.Marshal(role)
	it["content"] = t["value"]
	return it, nil
}

// shareGPTCalls turns a function_call value ({"name","arguments"} or a list of them, usually as a JSON
// string) into OpenAI tool_calls.
func shareGPTCalls(raw json.RawMessage) (json.RawMessage, error) {
	v, _, _, err := jsonValue(raw)
	if err != nil {
		return nil, fmt.Errorf(`field "value": %v`, err)
	}
	var list []json.RawMessage
	if len(v) > 0 && v[0] == '[' {
		if err := json.Unmarshal(v, &list); err != nil {
			return nil, errors.New(`field "value": not a function call or a list of them`)
		}
	} else {
		list = []json.RawMessage{v}
	}
	calls := make([]map[string]any, len(list))
	for j, c := range list {
		var fn map[string]json.RawMessage
		if err := json.Unmarshal(c, &fn); err != nil || fn == nil {
			return nil, fmt.Errorf(`field "value": call %d is not an object {"name", "arguments"}`, j)
		}
		calls[j] = map[string]any{"type": "function", "function": fn}
	}
	return json.Marshal(calls)
}

// shareGPTTools accepts OpenAI tool objects or bare function definitions, as a list or a JSON string,
// and returns them in OpenAI's form (validated by parseTools).
func shareGPTTools(raw json.RawMessage) (json.RawMessage, error) {
	if isNull(raw) {
		return nil, nil
	}
	v, _, _, err := jsonValue(raw)
	if err != nil {
		return nil, fmt.Errorf(`field "tools": %v`, err)
	}
	var items []json.RawMessage
	if err := json.Unmarshal(v, &items); err != nil {
		return nil, errors.New(`field "tools": not a list of objects`)
	}
	var out bytes.Buffer
	out.WriteByte('[')
	for i, it := range items {
		if i > 0 {
			out.WriteByte(',')
		}
		var keys map[string]json.RawMessage
		if json.Unmarshal(it, &keys) == nil && keys != nil && !has(keys, "function") {
			// a bare function definition: wrapped, its bytes (and so its key order) kept
			out.WriteString(`{"type":"function","function":`)
			out.Write(it)
			out.WriteByte('}')
			continue
		}
		out.Write(it)
	}
	out.WriteByte(']')
	return parseTools(out.Bytes())
}
