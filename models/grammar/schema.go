package grammar

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
)

// JSONSchema compiles a JSON Schema (the subset of OpenAI's structured outputs: type, properties, required,
// additionalProperties, items, prefixItems, minItems, maxItems, enum, const, pattern, format, minLength,
// maxLength, minimum, maximum, exclusiveMinimum, exclusiveMaximum, anyOf, a one-schema allOf, $ref into $defs or
// definitions, nesting and recursion) into the grammar of the JSON texts it accepts. Objects are written with
// their declared properties in declared order (optional ones may be left out); extra properties are written only
// for a schema whose additionalProperties is a schema and that declares no properties. A keyword outside the
// subset is an *Error naming it.
func JSONSchema(schema []byte) (*Grammar, error) {
	d := newSchemaCompiler(schema)
	if d.err != nil {
		return nil, d.err
	}
	c := d.c
	top := c.rule("root")
	e, err := c.schema(c.root, "#")
	if err != nil {
		return nil, err
	}
	c.define(top, e)
	return c.compile(top)
}

type schemaStart struct {
	c   *schemaCompiler
	err error
}

func newSchemaCompiler(schema []byte) schemaStart {
	dec := json.NewDecoder(bytes.NewReader(schema))
	dec.UseNumber()
	root, err := decodeOrdered(dec)
	if err == nil && dec.More() {
		err = fmt.Errorf("more than one JSON value")
	}
	if err != nil {
		return schemaStart{err: &Error{Keyword: "schema", Msg: "not valid JSON: " + err.Error()}}
	}
	return schemaStart{c: &schemaCompiler{jsonBuilder: newJSONBuilder(), root: root, refs: map[string]int{}}}
}

type schemaCompiler struct {
	*jsonBuilder
	root any
	refs map[string]int // $ref target → rule
}

// annotation keywords carry no constraint.
var annotations = map[string]bool{"title": true, "description": true, "default": true, "examples": true,
	"$schema": true, "$id": true, "$comment": true, "deprecated": true, "readOnly": true, "writeOnly": true,
	"$defs": true, "definitions": true, "strict": true, "name": true, "discriminator": true, "example": true,
	"contentEncoding": true, "contentMediaType": true}

// known keywords this compiler implements (others are refused).
var known = map[string]bool{"type": true, "properties": true, "required": true, "additionalProperties": true,
	"unevaluatedProperties": true, "items": true, "prefixItems": true, "minItems": true, "maxItems": true, "enum": true,
	"const": true, "pattern": true, "format": true, "minLength": true, "maxLength": true, "minimum": true,
	"maximum": true, "exclusiveMinimum": true, "exclusiveMaximum": true, "anyOf": true, "allOf": true,
	"$ref": true, "nullable": true}

func (c *schemaCompiler) schema(s any, path string) (*expr, error) {
	switch v := s.(type) {
	case bool:
		if !v {
			return nil, &Error{Keyword: "false", Path: path, Msg: "the schema false accepts no value"}
		}
		return c.anyValue(), nil
	case map[string]any:
		return c.object(v, path)
	}
	return nil, &Error{Keyword: "schema", Path: path, Msg: "a schema must be an object or a boolean"}
}

// complexity: one branch per JSON Schema object keyword, each rejecting with the keyword's path.
func (c *schemaCompiler) object(s map[string]any, path string) (*expr, error) {
	keys := make([]string, 0, len(s))
	for k := range s {
		if k != orderKey {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !known[k] && !annotations[k] {
			return nil, &Error{Keyword: k, Path: path, Msg: "this JSON Schema keyword is not supported in structured outputs"}
		}
	}
	if r, ok := s["$ref"]; ok {
		ref, ok := r.(string)
		if !ok {
			return nil, &Error{Keyword: "$ref", Path: path, Msg: "must be a string"}
		}
		for _, k := range keys {
			if known[k] && k != "$ref" {
				return nil, &Error{Keyword: k, Path: path, Msg: "keywords beside $ref are not supported"}
			}
		}
		return c.ref(ref, path)
	}
	if a, ok := s["allOf"]; ok {
		list, ok := a.([]any)
		if !ok || len(list) != 1 {
			return nil, &Error{Keyword: "allOf", Path: path, Msg: "only an allOf of exactly one schema is supported"}
		}
		for _, k := range keys {
			if known[k] && k != "allOf" {
				return nil, &Error{Keyword: k, Path: path, Msg: "keywords beside allOf are not supported"}
			}
		}
		return c.schema(list[0], path+"/allOf/0")
	}
	if a, ok := s["anyOf"]; ok {
		list, ok := a.([]any)
		if !ok || len(list) == 0 {
			return nil, &Error{Keyword: "anyOf", Path: path, Msg: "must be a non-empty array of schemas"}
		}
		for _, k := range keys {
			if known[k] && k != "anyOf" {
				return nil, &Error{Keyword: k, Path: path, Msg: "keywords beside anyOf are not supported; move them into each branch"}
			}
		}
		alts := make([]*expr, len(list))
		for i, sub := range list {
			e, err := c.schema(sub, fmt.Sprintf("%s/anyOf/%d", path, i))
			if err != nil {
				return nil, err
			}
			alts[i] = e
		}
		return alt(alts...), nil
	}
	if v, ok := s["const"]; ok {
		return literal(v)
	}
	if v, ok := s["enum"]; ok {
		list, ok := v.([]any)
		if !ok || len(list) == 0 {
			return nil, &Error{Keyword: "enum", Path: path, Msg: "must be a non-empty array"}
		}
		alts := make([]*expr, 0, len(list))
		for _, x := range list {
			e, err := literal(x)
			if err != nil {
				return nil, &Error{Keyword: "enum", Path: path, Msg: err.Error()}
			}
			alts = append(alts, e)
		}
		return alt(alts...), nil
	}
	types, err := schemaTypes(s, path)
	if err != nil {
		return nil, err
	}
	alts := make([]*expr, 0, len(types))
	for _, t := range types {
		var e *expr
		var err error
		switch t {
		case "object":
			e, err = c.objectType(s, path)
		case "array":
			e, err = c.arrayType(s, path)
		case "string":
			e, err = c.stringType(s, path)
		case "integer":
			e, err = numberType(s, path, true)
		case "number":
			e, err = numberType(s, path, false)
		case "boolean":
			e = alt(lit("true"), lit("false"))
		case "null":
			e = lit("null")
		case "any":
			e = c.anyValue()
		default:
			return nil, &Error{Keyword: "type", Path: path, Msg: fmt.Sprintf("unknown type %q", t)}
		}
		if err != nil {
			return nil, err
		}
		alts = append(alts, e)
	}
	if n, ok := s["nullable"].(bool); ok && n {
		alts = append(alts, lit("null"))
	}
	return alt(alts...), nil
}

// schemaTypes lists the schema's types; without "type" they follow from the keywords present.
func schemaTypes(s map[string]any, path string) ([]string, error) {
	switch t := s["type"].(type) {
	case string:
		return []string{t}, nil
	case []any:
		var out []string
		for _, x := range t {
			str, ok := x.(string)
			if !ok {
				return nil, &Error{Keyword: "type", Path: path, Msg: "must be a string or an array of strings"}
			}
			out = append(out, str)
		}
		if len(out) == 0 {
			return nil, &Error{Keyword: "type", Path: path, Msg: "an empty type list accepts no value"}
		}
		return out, nil
	case nil:
		if _, ok := s["type"]; ok {
			return nil, &Error{Keyword: "type", Path: path, Msg: "must be a string or an array of strings"}
		}
	default:
		return nil, &Error{Keyword: "type", Path: path, Msg: "must be a string or an array of strings"}
	}
	has := func(ks ...string) bool {
		for _, k := range ks {
			if _, ok := s[k]; ok {
				return true
			}
		}
		return false
	}
	switch {
	case has("properties", "required", "additionalProperties"):
		return []string{"object"}, nil
	case has("items", "prefixItems", "minItems", "maxItems"):
		return []string{"array"}, nil
	case has("pattern", "format", "minLength", "maxLength"):
		return []string{"string"}, nil
	case has("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
		return []string{"number"}, nil
	}
	return []string{"any"}, nil
}

func (c *schemaCompiler) ref(ref, path string) (*expr, error) {
	if r, ok := c.refs[ref]; ok {
		return ref2(r), nil
	}
	if ref != "#" && !strings.HasPrefix(ref, "#/") {
		return nil, &Error{Keyword: "$ref", Path: path, Msg: fmt.Sprintf("only local references (#/$defs/...) are supported, got %q", ref)}
	}
	target := c.root
	if ref != "#" {
		for _, part := range strings.Split(ref[2:], "/") {
			part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
			m, ok := target.(map[string]any)
			if !ok {
				return nil, &Error{Keyword: "$ref", Path: path, Msg: fmt.Sprintf("%q does not resolve", ref)}
			}
			if target, ok = m[part]; !ok {
				return nil, &Error{Keyword: "$ref", Path: path, Msg: fmt.Sprintf("%q does not resolve", ref)}
			}
		}
	}
	r := c.rule(ref)
	c.refs[ref] = r
	e, err := c.schema(target, ref)
	if err != nil {
		return nil, err
	}
	c.define(r, e)
	return ref2(r), nil
}

func ref2(r int) *expr { return ref(r) }

func (c *schemaCompiler) objectType(s map[string]any, path string) (*expr, error) {
	props, _ := s["properties"].(map[string]any)
	if _, ok := s["properties"]; ok && props == nil {
		return nil, &Error{Keyword: "properties", Path: path, Msg: "must be an object"}
	}
	required := map[string]bool{}
	if r, ok := s["required"]; ok {
		list, ok := r.([]any)
		if !ok {
			return nil, &Error{Keyword: "required", Path: path, Msg: "must be an array of strings"}
		}
		for _, x := range list {
			name, ok := x.(string)
			if !ok {
				return nil, &Error{Keyword: "required", Path: path, Msg: "must be an array of strings"}
			}
			if _, ok := props[name]; !ok {
				return nil, &Error{Keyword: "required", Path: path, Msg: fmt.Sprintf("required property %q is not in properties", name)}
			}
			required[name] = true
		}
	}
	names := propertyOrder(props)
	if len(names) == 0 {
		switch ap := s["additionalProperties"].(type) {
		case map[string]any: // a map: any keys, values of that schema
			v, err := c.schema(ap, path+"/additionalProperties")
			if err != nil {
				return nil, err
			}
			c.anyValue()
			member := seq(ref(c.str), ws(), lit(":"), ws(), c.valueRule(v, path+"/additionalProperties"))
			return seq(lit("{"), ws(), opt(seq(member, star(seq(ws(), lit(","), ws(), member)))), ws(), lit("}")), nil
		case bool:
			if !ap {
				return lit("{}"), nil
			}
		}
		return c.anyObject(), nil
	}
	type member struct {
		e   *expr
		req bool
	}
	members := make([]member, len(names))
	for i, name := range names {
		v, err := c.schema(props[name], path+"/properties/"+name)
		if err != nil {
			return nil, err
		}
		key, err := literal(name)
		if err != nil {
			return nil, err
		}
		members[i] = member{seq(key, ws(), lit(":"), ws(), c.valueRule(v, path+"/properties/"+name)), required[name]}
	}
	comma := func() *expr { return seq(ws(), lit(","), ws()) }
	// rest(i): the members from i on, each preceded by a comma, optional ones skippable.
	rest := func(i int) *expr {
		var parts []*expr
		for _, m := range members[i:] {
			e := seq(comma(), m.e)
			if !m.req {
				e = opt(e)
			}
			parts = append(parts, e)
		}
		return seq(parts...)
	}
	// The first member written is any member up to the first required one.
	var firsts []*expr
	allOptional := true
	for i, m := range members {
		firsts = append(firsts, seq(m.e, rest(i+1)))
		if m.req {
			allOptional = false
			break
		}
	}
	body := alt(firsts...)
	if allOptional {
		body = opt(body)
	}
	return seq(lit("{"), ws(), body, ws(), lit("}")), nil
}

// valueRule puts a compound value in a rule of its own, so that the object grammar that repeats it (each
// optional member appears in several alternatives) refers to one copy.
func (c *schemaCompiler) valueRule(e *expr, path string) *expr {
	if e.size() < 64 {
		return e
	}
	r := c.rule(path)
	c.define(r, e)
	return ref(r)
}

// propertyOrder is the properties' order in the schema text.
func propertyOrder(props map[string]any) []string {
	order, _ := props[orderKey].([]string)
	return order
}

func (c *schemaCompiler) arrayType(s map[string]any, path string) (*expr, error) {
	minItems, err := intKeyword(s, "minItems", path, 0)
	if err != nil {
		return nil, err
	}
	maxItems, err := intKeyword(s, "maxItems", path, -1)
	if err != nil {
		return nil, err
	}
	if maxItems >= 0 && maxItems < minItems {
		return nil, &Error{Keyword: "maxItems", Path: path, Msg: "is less than minItems"}
	}
	var prefix []*expr
	if p, ok := s["prefixItems"]; ok {
		list, ok := p.([]any)
		if !ok {
			return nil, &Error{Keyword: "prefixItems", Path: path, Msg: "must be an array of schemas"}
		}
		for i, sub := range list {
			e, err := c.schema(sub, fmt.Sprintf("%s/prefixItems/%d", path, i))
			if err != nil {
				return nil, err
			}
			prefix = append(prefix, c.valueRule(e, fmt.Sprintf("%s/prefixItems/%d", path, i)))
		}
	}
	var item *expr
	if it, ok := s["items"]; ok {
		if b, ok := it.(bool); !ok || b {
			e, err := c.schema(it, path+"/items")
			if err != nil {
				return nil, err
			}
			item = c.valueRule(e, path+"/items")
		}
	} else {
		item = c.anyValue()
	}
	comma := func() *expr { return seq(ws(), lit(","), ws()) }
	// The elements: the prefix items in order (a shorter array may stop early when minItems allows), then items.
	elems := append([]*expr(nil), prefix...) // elems[k] is element k
	maxLen := maxItems
	if item == nil {
		if maxLen < 0 || maxLen > len(prefix) {
			maxLen = len(prefix)
		}
	}
	if maxLen >= 0 && maxLen < minItems {
		return nil, &Error{Keyword: "minItems", Path: path, Msg: "more items are required than the schema allows"}
	}
	// Build from the end: tail(k) = the elements from k on, given k elements written (each preceded by a comma).
	var tail func(k int) *expr
	tail = func(k int) *expr {
		if maxLen >= 0 && k >= maxLen {
			return empty()
		}
		if k >= len(prefix) {
			need := max(minItems-k, 0)
			if maxLen < 0 {
				return seq(rep(seq(comma(), item), need, need), star(seq(comma(), item)))
			}
			return rep(seq(comma(), item), need, maxLen-k)
		}
		e := seq(comma(), elems[k], tail(k+1))
		if k >= minItems {
			e = opt(e)
		}
		return e
	}
	var body *expr
	switch {
	case maxLen == 0:
		body = empty()
	case len(prefix) > 0:
		body = seq(elems[0], tail(1))
	default:
		body = seq(item, tail(1))
	}
	if minItems == 0 && maxLen != 0 {
		body = opt(body)
	}
	return seq(lit("["), ws(), body, ws(), lit("]")), nil
}

func intKeyword(s map[string]any, k, path string, def int) (int, error) {
	v, ok := s[k]
	if !ok {
		return def, nil
	}
	n, ok := v.(json.Number)
	if ok {
		if i, err := n.Int64(); err == nil && i >= 0 && i <= 1<<16 {
			return int(i), nil
		}
	}
	return 0, &Error{Keyword: k, Path: path, Msg: fmt.Sprintf("must be an integer in [0, %d]", 1<<16)}
}

func (c *schemaCompiler) stringType(s map[string]any, path string) (*expr, error) {
	minLen, err := intKeyword(s, "minLength", path, 0)
	if err != nil {
		return nil, err
	}
	maxLen, err := intKeyword(s, "maxLength", path, -1)
	if err != nil {
		return nil, err
	}
	if maxLen >= 0 && maxLen < minLen {
		return nil, &Error{Keyword: "maxLength", Path: path, Msg: "is less than minLength"}
	}
	p, hasPattern := s["pattern"]
	f, hasFormat := s["format"]
	if (hasPattern || hasFormat) && (minLen > 0 || maxLen >= 0) {
		return nil, &Error{Keyword: "minLength", Path: path, Msg: "length bounds together with pattern or format are not supported"}
	}
	if hasPattern {
		if hasFormat {
			return nil, &Error{Keyword: "format", Path: path, Msg: "format together with pattern is not supported"}
		}
		pat, ok := p.(string)
		if !ok {
			return nil, &Error{Keyword: "pattern", Path: path, Msg: "must be a string"}
		}
		e, err := regexExpr(pat, true)
		if err != nil {
			return nil, &Error{Keyword: "pattern", Path: path, Msg: err.Error()}
		}
		return seq(lit(`"`), e, lit(`"`)), nil
	}
	if hasFormat {
		name, _ := f.(string)
		pat, ok := formats[name]
		if !ok {
			return nil, &Error{Keyword: "format", Path: path, Msg: fmt.Sprintf("format %q is not supported (supported: %s)", name, formatNames())}
		}
		e, err := regexExpr(pat, true)
		if err != nil {
			return nil, err
		}
		return seq(lit(`"`), e, lit(`"`)), nil
	}
	return jsonString(minLen, maxLen), nil
}

// formats are the string formats generated, as patterns that produce only valid values.
var formats = map[string]string{
	"date":      `^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|1\d|2[0-8])$`,
	"time":      `^([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$`,
	"date-time": `^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|1\d|2[0-8])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$`,
	"uuid":      `^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`,
	"ipv4":      `^((25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$`,
	"email":     `^[a-zA-Z0-9_%+-]{1,16}(\.[a-zA-Z0-9_%+-]{1,16}){0,2}@[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?){0,3}\.[a-z]{2,8}$`,
	"hostname":  `^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?){0,4}$`,
}

func formatNames() string {
	names := make([]string, 0, len(formats))
	for k := range formats {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// numberType is an integer or number with optional bounds.
//
// complexity: one branch per numeric bound keyword, for integers and numbers.
func numberType(s map[string]any, path string, integer bool) (*expr, error) {
	lo, hi := math.Inf(-1), math.Inf(1)
	loEx, hiEx := false, false
	for _, k := range []string{"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"} {
		v, ok := s[k]
		if !ok {
			continue
		}
		n, ok := v.(json.Number)
		var f float64
		var err error
		if ok {
			f, err = n.Float64()
		}
		if !ok || err != nil || math.IsInf(f, 0) {
			return nil, &Error{Keyword: k, Path: path, Msg: "must be a number"}
		}
		switch k {
		case "minimum":
			if f > lo || (f == lo && loEx) {
				lo, loEx = f, false
			}
		case "exclusiveMinimum":
			if f >= lo {
				lo, loEx = f, true
			}
		case "maximum":
			if f < hi || (f == hi && hiEx) {
				hi, hiEx = f, false
			}
		case "exclusiveMaximum":
			if f <= hi {
				hi, hiEx = f, true
			}
		}
	}
	// Generated numbers have at most 15 digits: bounds beyond ±1e15 (zod's safe-integer range, for one) hold for
	// all of them.
	const big = 1e15
	if lo <= -big {
		lo, loEx = math.Inf(-1), false
	}
	if hi >= big {
		hi, hiEx = math.Inf(1), false
	}
	if math.IsInf(lo, -1) && math.IsInf(hi, 1) {
		if integer {
			return jsonInteger(), nil
		}
		return jsonNumber(), nil
	}
	// Integers k in [kLo, kHi] satisfy the bounds.
	kLo, kHi := int64(-big+1), int64(big-1)
	if !math.IsInf(lo, -1) {
		c := math.Ceil(lo)
		if loEx && c == lo {
			c++
		}
		if c > big-1 {
			return nil, &Error{Keyword: "minimum", Path: path, Msg: "a lower bound of 1e15 or more is not supported"}
		}
		kLo = max(kLo, int64(c))
	}
	if !math.IsInf(hi, 1) {
		f := math.Floor(hi)
		if hiEx && f == hi {
			f--
		}
		if f < -big+1 {
			return nil, &Error{Keyword: "maximum", Path: path, Msg: "an upper bound of -1e15 or less is not supported"}
		}
		kHi = min(kHi, int64(f))
	}
	var alts []*expr
	if kLo <= kHi {
		alts = append(alts, intRange(kLo, kHi))
	}
	if !integer {
		// A fraction after a non-negative k gives values in [k, k+1), after -k values in (-k-1, -k]: keep the k
		// whose whole interval lies inside the bounds.
		frac := seq(lit("."), rep(digit(), 1, maxDigits))
		pLo, pHi := max(0, kLo), kHi
		if !math.IsInf(hi, 1) {
			pHi = min(pHi, int64(math.Floor(hi))-1)
		}
		if pLo <= pHi {
			alts = append(alts, seq(nonNegRange(pLo, pHi), frac))
		}
		nLo, nHi := max(0, -kHi), int64(big-1)
		if !math.IsInf(lo, -1) {
			nHi = min(nHi, int64(math.Floor(-lo))-1)
		}
		if nLo <= nHi {
			alts = append(alts, seq(lit("-"), nonNegRange(nLo, nHi), frac))
		}
	}
	if len(alts) == 0 {
		return nil, &Error{Keyword: "minimum", Path: path, Msg: "no value satisfies the bounds"}
	}
	return alt(alts...), nil
}

// intRange matches the decimal integers in [lo, hi] (no leading zeros, "-" for negatives).
func intRange(lo, hi int64) *expr {
	var alts []*expr
	if hi >= 0 {
		alts = append(alts, nonNegRange(max(lo, 0), hi))
	}
	if lo < 0 {
		alts = append(alts, seq(lit("-"), nonNegRange(max(1, -hi), -lo)))
	}
	return alt(alts...)
}

// nonNegRange matches the decimal numbers in [lo, hi], 0 ≤ lo ≤ hi, without leading zeros.
func nonNegRange(lo, hi int64) *expr {
	var alts []*expr
	// Split by digit count, then match each same-length range digit by digit.
	for n := 1; n <= 19; n++ {
		pLo, pHi := pow10(n-1), pow10(n)-1
		if n == 1 {
			pLo = 0
		}
		a, b := max(lo, pLo), min(hi, pHi)
		if a > b {
			continue
		}
		alts = append(alts, sameLen(fmt.Sprint(a), fmt.Sprint(b)))
	}
	return alt(alts...)
}

func pow10(n int) int64 {
	p := int64(1)
	for range n {
		p *= 10
	}
	return p
}

// sameLen matches the digit strings of one length between a and b inclusive.
func sameLen(a, b string) *expr {
	if len(a) == 0 {
		return empty()
	}
	if a[0] == b[0] {
		return seq(lit(a[:1]), sameLen(a[1:], b[1:]))
	}
	allNine := strings.Repeat("9", len(a)-1)
	allZero := strings.Repeat("0", len(a)-1)
	var alts []*expr
	alts = append(alts, seq(lit(a[:1]), sameLen(a[1:], allNine)))
	if b[0]-a[0] > 1 {
		alts = append(alts, seq(byteRange(a[0]+1, b[0]-1), rep(digit(), len(a)-1, len(a)-1)))
	}
	alts = append(alts, seq(lit(b[:1]), sameLen(allZero, b[1:])))
	return alt(alts...)
}
