package serve

import (
	"errors"
	"slices"
	"strings"
	"sync"

	"github.com/lorakit/lorakit/models/grammar"
	"github.com/lorakit/lorakit/serve/engine"
	"github.com/lorakit/lorakit/serve/openai"
)

// grammars caches compiled grammars by what they were compiled from, so that requests repeating a schema
// share its automaton and its cached token masks (a generation meets the same states again and again).
type grammars struct {
	mu    sync.Mutex
	m     map[string]*grammar.Grammar
	order []string
}

const (
	maxCachedGrammars = 64
	maxGrammarStates  = 1 << 16
)

func (c *grammars) get(key string, build func() (*grammar.Grammar, error)) (*grammar.Grammar, error) {
	c.mu.Lock()
	if g, ok := c.m[key]; ok {
		if g.States() <= maxGrammarStates {
			c.mu.Unlock()
			return g, nil
		}
		// a generic grammar (json_object) that met too many states: start afresh, the old one is freed with its
		// last request
		delete(c.m, key)
		c.order = slices.DeleteFunc(c.order, func(k string) bool { return k == key })
	}
	c.mu.Unlock()
	g, err := build() // outside the lock: a large schema must not stall other requests
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]*grammar.Grammar{}
	}
	if old, ok := c.m[key]; ok {
		return old, nil
	}
	if len(c.order) >= maxCachedGrammars {
		delete(c.m, c.order[0])
		c.order = c.order[1:]
	}
	c.m[key] = g
	c.order = append(c.order, key)
	return g, nil
}

// constraint compiles a request's output constraint (nil: none) into a factory of per-choice constraints.
// parser is the chat template's tool-call format (for tool_choice "required" or named).
func (s *Server) constraint(g *openai.Guide, parser string) (func() engine.Constraint, error) {
	if g == nil {
		return nil, nil
	}
	var key string
	var build func() (*grammar.Grammar, error)
	switch g.Kind {
	case openai.GuideJSONObject:
		key, build = "object", func() (*grammar.Grammar, error) { return grammar.JSONObject(), nil }
	case openai.GuideJSONSchema:
		key, build = "schema\x00"+string(g.Schema), func() (*grammar.Grammar, error) { return grammar.JSONSchema(g.Schema) }
	case openai.GuideRegex:
		key, build = "regex\x00"+g.Regex, func() (*grammar.Grammar, error) { return grammar.Regex(g.Regex) }
	case openai.GuideChoice:
		key, build = "choice\x00"+strings.Join(g.Choice, "\x00"), func() (*grammar.Grammar, error) { return grammar.Choice(g.Choice) }
	case openai.GuideToolCall:
		if parser == "" {
			return nil, openai.BadRequest("tool_choice", "this model's chat template has no tool-call format lorakit knows (Hermes <tool_call> blocks or Llama 3.1+ JSON), so a tool call cannot be forced; use tool_choice \"auto\" or \"none\"")
		}
		schema, err := openai.ToolCallSchema(g.Tools, g.ToolName, parser)
		if err != nil {
			return nil, openai.BadRequest("tools", "tools cannot be turned into a call grammar: %v", err)
		}
		calls := 1
		if g.Parallel {
			calls = 8
		}
		frame := grammar.Frame{Separator: "; ", Min: 1, Max: calls}
		if parser == openai.ToolParserHermes {
			frame = grammar.Frame{Prefix: "<tool_call>\n", Suffix: "\n</tool_call>", Separator: "\n", Min: 1, Max: calls}
		}
		key = "tools\x00" + parser + "\x00" + string(schema) + "\x00" + string(rune('0'+calls))
		build = func() (*grammar.Grammar, error) { return grammar.JSONSchemaFramed(schema, frame) }
	default:
		return nil, openai.BadRequest(g.Param, "unknown output constraint %q", g.Kind)
	}
	gr, err := s.grammars.get(key, build)
	if err != nil {
		param := g.Param
		if g.Kind == openai.GuideToolCall {
			param = "tools"
		}
		var ge *grammar.Error
		if errors.As(err, &ge) {
			return nil, openai.BadRequest(param, "%s is not supported: %v", param, err)
		}
		return nil, openai.BadRequest(param, "%s: %v", param, err)
	}
	return func() engine.Constraint { return s.model.Constrain(gr) }, nil
}
