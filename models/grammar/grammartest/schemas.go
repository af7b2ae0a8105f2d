// Package grammartest generates random JSON Schemas within the subset models/grammar compiles, for property
// tests of constrained generation.
package grammartest

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
)

// RandomSchema returns a random schema: nested objects (required and optional properties), arrays with item
// bounds, enums, consts, bounded strings, patterns, formats, bounded integers and numbers, booleans, nulls,
// anyOf and $ref into $defs. Free-length strings are rare and short bounds common, so that a generation by a
// random model finishes within a few hundred tokens.
func RandomSchema(r *rand.Rand) []byte {
	g := &gen{r: r, defs: map[string]any{}}
	s := g.object(0)
	if len(g.defs) > 0 {
		s["$defs"] = g.defs
	}
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return b
}

type gen struct {
	r    *rand.Rand
	defs map[string]any
}

func (g *gen) object(depth int) map[string]any {
	n := 1 + g.r.IntN(4)
	props := map[string]any{}
	var req []string
	for i := range n {
		name := fmt.Sprintf("%s%d", []string{"id", "name", "tags", "v", "x y", "ü", `q"t`}[g.r.IntN(7)], i)
		props[name] = g.value(depth + 1)
		if g.r.IntN(3) > 0 {
			req = append(req, name)
		}
	}
	s := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
	if req != nil {
		s["required"] = req
	}
	return s
}

func (g *gen) value(depth int) any {
	k := g.r.IntN(14)
	if depth >= 3 && k < 3 {
		k = 3 + g.r.IntN(11)
	}
	switch k {
	case 0:
		return g.object(depth)
	case 1:
		s := map[string]any{"type": "array", "items": g.value(depth + 1), "maxItems": 1 + g.r.IntN(3)}
		if g.r.IntN(2) == 0 {
			s["minItems"] = 1
		}
		return s
	case 2:
		name := fmt.Sprintf("d%d", len(g.defs))
		g.defs[name] = nil // reserved: a nested $ref gets another name
		g.defs[name] = g.object(depth)
		return map[string]any{"$ref": "#/$defs/" + name}
	case 3:
		return map[string]any{"enum": []any{"red", "green", 3, nil, "blue\n"}[:1+g.r.IntN(5)]}
	case 4:
		return map[string]any{"const": []any{"fixed", 42, true, map[string]any{"a": []int{1}}}[g.r.IntN(4)]}
	case 5:
		return map[string]any{"type": "string", "maxLength": g.r.IntN(8), "minLength": 0}
	case 6:
		return map[string]any{"type": "string", "pattern": []string{`^[a-z]{1,5}$`, `^\d{3}-\d{2}$`, `^(ab|c\"d)+$`, `^.{0,4}$`}[g.r.IntN(4)]}
	case 7:
		return map[string]any{"type": "string", "format": []string{"date", "date-time", "uuid", "email", "ipv4", "time"}[g.r.IntN(6)]}
	case 8:
		lo := g.r.IntN(200) - 100
		return map[string]any{"type": "integer", "minimum": lo, "maximum": lo + g.r.IntN(1000)}
	case 9:
		return map[string]any{"type": "number", "exclusiveMinimum": -1.5, "maximum": 2.25 + float64(g.r.IntN(10))}
	case 10:
		return map[string]any{"type": "boolean"}
	case 11:
		return map[string]any{"type": []string{"integer", "null"}}
	case 12:
		return map[string]any{"anyOf": []any{map[string]any{"type": "number"}, map[string]any{"type": "string", "maxLength": 3}, g.object(depth + 1)}}
	default:
		return map[string]any{"type": "string", "maxLength": 1 + g.r.IntN(5)}
	}
}
