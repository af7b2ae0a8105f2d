package openai

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Kinds of output constraint (structured outputs, vLLM's guided decoding).
const (
	GuideJSONObject = "json_object"
	GuideJSONSchema = "json_schema"
	GuideRegex      = "regex"
	GuideChoice     = "choice"
	// GuideToolCall constrains a chat completion to calls of the request's tools (tool_choice "required" or a
	// named function), in the chat template's tool-call format.
	GuideToolCall = "tool_call"
)

// Guide is the output constraint a request asks for. Param names the request field it came from, so that a
// schema the server cannot compile is a 400 on that field.
type Guide struct {
	Kind   string
	Param  string
	Schema json.RawMessage // json_schema
	Regex  string
	Choice []string
	// Tools (a JSON array) and ToolName (a named tool_choice, else "") for GuideToolCall; Parallel allows more
	// than one call.
	Tools    json.RawMessage
	ToolName string
	Parallel bool
}

// ResponseFormat is `response_format`.
type ResponseFormat struct {
	Type       string `json:"type"`
	JSONSchema *struct {
		Name   string          `json:"name"`
		Schema json.RawMessage `json:"schema"`
		Strict *bool           `json:"strict"`
	} `json:"json_schema"`
}

// guideFields are the constraint fields both request kinds carry: OpenAI's response_format and vLLM's guided_*.
type guideFields struct {
	ResponseFormat          *ResponseFormat `json:"response_format"`
	GuidedJSON              json.RawMessage `json:"guided_json"`
	GuidedRegex             *string         `json:"guided_regex"`
	GuidedChoice            []string        `json:"guided_choice"`
	GuidedGrammar           *string         `json:"guided_grammar"`
	GuidedWhitespacePattern *string         `json:"guided_whitespace_pattern"`
	StructuredOutputs       json.RawMessage `json:"structured_outputs"`
}

func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || string(raw) == "null"
}

// guide resolves the constraint fields: at most one may be set; none gives nil.
func (f *guideFields) guide() (*Guide, *Error) {
	var gs []*Guide
	if rf := f.ResponseFormat; rf != nil {
		switch rf.Type {
		case "", "text":
		case "json_object":
			gs = append(gs, &Guide{Kind: GuideJSONObject, Param: "response_format"})
		case "json_schema":
			if rf.JSONSchema == nil || isNull(rf.JSONSchema.Schema) {
				return nil, BadRequest("response_format.json_schema", "response_format of type json_schema needs json_schema.schema")
			}
			gs = append(gs, &Guide{Kind: GuideJSONSchema, Param: "response_format.json_schema.schema", Schema: rf.JSONSchema.Schema})
		default:
			return nil, BadRequest("response_format.type", "response_format.type must be \"text\", \"json_object\" or \"json_schema\", got %q", rf.Type)
		}
	}
	if !isNull(f.GuidedJSON) {
		schema := bytes.TrimSpace(f.GuidedJSON)
		if schema[0] == '"' { // vLLM accepts the schema as a JSON string too
			var s string
			if err := json.Unmarshal(schema, &s); err != nil {
				return nil, BadRequest("guided_json", "guided_json must be a JSON Schema object or a string holding one")
			}
			schema = []byte(s)
		}
		gs = append(gs, &Guide{Kind: GuideJSONSchema, Param: "guided_json", Schema: schema})
	}
	if f.GuidedRegex != nil {
		gs = append(gs, &Guide{Kind: GuideRegex, Param: "guided_regex", Regex: *f.GuidedRegex})
	}
	if f.GuidedChoice != nil {
		if len(f.GuidedChoice) == 0 {
			return nil, BadRequest("guided_choice", "guided_choice must list at least one choice")
		}
		gs = append(gs, &Guide{Kind: GuideChoice, Param: "guided_choice", Choice: f.GuidedChoice})
	}
	if f.GuidedGrammar != nil {
		return nil, BadRequest("guided_grammar", "guided_grammar is not supported; use guided_json, guided_regex or guided_choice")
	}
	if f.GuidedWhitespacePattern != nil {
		return nil, BadRequest("guided_whitespace_pattern", "guided_whitespace_pattern is not supported")
	}
	if !isNull(f.StructuredOutputs) {
		return nil, BadRequest("structured_outputs", "structured_outputs is not supported; use response_format or guided_json, guided_regex, guided_choice")
	}
	switch len(gs) {
	case 0:
		return nil, nil
	case 1:
		return gs[0], nil
	}
	return nil, BadRequest(gs[1].Param, "only one output constraint may be given; got %s and %s", gs[0].Param, gs[1].Param)
}

// toolChoice is a resolved tool_choice.
type toolChoice struct {
	mode string // auto, none, required
	name string // a named function (mode required)
}

// decodeToolChoice reads `tool_choice`: absent, null or "auto" is auto; "none"; "required"; or
// {"type":"function","function":{"name":...}}, which must name one of the tools.
func decodeToolChoice(raw json.RawMessage, tools json.RawMessage) (toolChoice, *Error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return toolChoice{mode: ToolChoiceAuto}, nil
	}
	if raw[0] == '{' {
		var named struct {
			Type     string `json:"type"`
			Function *struct {
				Name string `json:"name"`
			} `json:"function"`
		}
		if err := json.Unmarshal(raw, &named); err != nil || named.Type != "function" || named.Function == nil || named.Function.Name == "" {
			return toolChoice{}, BadRequest("tool_choice", `tool_choice naming a function must be {"type": "function", "function": {"name": ...}}`)
		}
		if !hasTool(tools, named.Function.Name) {
			return toolChoice{}, BadRequest("tool_choice", "tool_choice names function %q, which is not in tools", named.Function.Name)
		}
		return toolChoice{mode: ToolChoiceRequired, name: named.Function.Name}, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return toolChoice{}, BadRequest("tool_choice", "tool_choice must be \"auto\", \"none\", \"required\" or a named function")
	}
	switch s {
	case ToolChoiceAuto, ToolChoiceNone:
		return toolChoice{mode: s}, nil
	case ToolChoiceRequired:
		if tools == nil {
			return toolChoice{}, BadRequest("tool_choice", "tool_choice \"required\" needs tools")
		}
		return toolChoice{mode: s}, nil
	}
	return toolChoice{}, BadRequest("tool_choice", "tool_choice must be \"auto\", \"none\", \"required\" or a named function, got %q", s)
}

func hasTool(tools json.RawMessage, name string) bool {
	var list []struct {
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	if json.Unmarshal(tools, &list) != nil {
		return false
	}
	for _, t := range list {
		if t.Function.Name == name {
			return true
		}
	}
	return false
}

// ToolCallSchema is the JSON Schema of one call of the tools (only name when set) in a tool-call format: for
// Hermes {"name", "arguments"}, for Llama 3 JSON {"name", "parameters"}, the arguments following each tool's
// parameters schema (any object when it has none).
func ToolCallSchema(tools json.RawMessage, name, parser string) (json.RawMessage, error) {
	var list []struct {
		Function struct {
			Name       string          `json:"name"`
			Parameters json.RawMessage `json:"parameters"`
		} `json:"function"`
	}
	if err := json.Unmarshal(tools, &list); err != nil {
		return nil, err
	}
	argKey := "arguments"
	if parser == ToolParserLlama3JSON {
		argKey = "parameters"
	}
	var branches []json.RawMessage
	for _, t := range list {
		if name != "" && t.Function.Name != name {
			continue
		}
		params := t.Function.Parameters
		if isNull(params) {
			params = json.RawMessage(`{"type":"object"}`)
		}
		nameJSON, _ := json.Marshal(t.Function.Name)
		keyJSON, _ := json.Marshal(argKey)
		branches = append(branches, json.RawMessage(fmt.Sprintf(
			`{"type":"object","properties":{"name":{"const":%s},%s:%s},"required":["name",%s],"additionalProperties":false}`,
			nameJSON, keyJSON, params, keyJSON)))
	}
	if len(branches) == 0 {
		return nil, fmt.Errorf("no tool named %q", name)
	}
	if len(branches) == 1 {
		return branches[0], nil
	}
	return json.Marshal(map[string]any{"anyOf": branches})
}
