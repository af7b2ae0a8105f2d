package grammar

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// Whitespace between JSON tokens is one space, or a newline and up to 20 spaces or tabs of indentation (as
// llama.cpp's JSON grammar allows): compact and pretty-printed JSON both fit, and a generation cannot loop on
// whitespace.
func ws() *expr {
	return alt(empty(), lit(" "), seq(lit("\n"), rep(byteSet(brange{' ', ' '}, brange{'\t', '\t'}), 0, 20)))
}

// jsonBuilder builds JSON grammars; generic rules are made once per grammar.
type jsonBuilder struct {
	builder
	value, object, array, str int // generic rules, -1 until made
}

func newJSONBuilder() *jsonBuilder {
	return &jsonBuilder{value: -1, object: -1, array: -1, str: -1}
}

// jsonChar is one character inside a JSON string: unescaped UTF-8 or an escape.
func jsonChar() *expr {
	return alt(
		byteSet(brange{0x20, 0x21}, brange{0x23, 0x5B}, brange{0x5D, 0x7F}),
		runeRange(0x80, utf8.MaxRune),
		seq(lit(`\`), alt(byteSet(brange{'"', '"'}, brange{'\\', '\\'}, brange{'/', '/'}, brange{'b', 'b'},
			brange{'f', 'f'}, brange{'n', 'n'}, brange{'r', 'r'}, brange{'t', 't'}),
			seq(lit("u"), rep(hexDigit(), 4, 4)))),
	)
}

func hexDigit() *expr {
	return byteSet(brange{'0', '9'}, brange{'a', 'f'}, brange{'A', 'F'})
}

func digit() *expr { return byteRange('0', '9') }

// jsonString is a string of minLen..maxLen characters (maxLen < 0: unbounded).
func jsonString(minLen, maxLen int) *expr {
	return seq(lit(`"`), rep(jsonChar(), minLen, maxLen), lit(`"`))
}

// Up to 15 significant digits keep a number exact in a float64 and stop an unlucky generation from writing
// digits forever.
const maxDigits = 15

func jsonInteger() *expr {
	return seq(opt(lit("-")), alt(lit("0"), seq(byteRange('1', '9'), rep(digit(), 0, maxDigits-1))))
}

func jsonNumber() *expr {
	return seq(jsonInteger(), opt(seq(lit("."), rep(digit(), 1, maxDigits))),
		opt(seq(byteSet(brange{'e', 'e'}, brange{'E', 'E'}), opt(byteSet(brange{'+', '+'}, brange{'-', '-'})), rep(digit(), 1, 3))))
}

// anyValue is any JSON value.
func (b *jsonBuilder) anyValue() *expr {
	if b.value < 0 {
		b.value = b.rule("value")
		b.object = b.rule("object")
		b.array = b.rule("array")
		b.str = b.rule("string")
		b.define(b.str, jsonString(0, -1))
		b.define(b.value, alt(ref(b.object), ref(b.array), ref(b.str), jsonNumber(), lit("true"), lit("false"), lit("null")))
		member := seq(ref(b.str), ws(), lit(":"), ws(), ref(b.value))
		b.define(b.object, seq(lit("{"), ws(), opt(seq(member, star(seq(ws(), lit(","), ws(), member)))), ws(), lit("}")))
		b.define(b.array, seq(lit("["), ws(), opt(seq(ref(b.value), star(seq(ws(), lit(","), ws(), ref(b.value))))), ws(), lit("]")))
	}
	return ref(b.value)
}

// anyObject is any JSON object.
func (b *jsonBuilder) anyObject() *expr {
	b.anyValue()
	return ref(b.object)
}

// literal is the compact JSON encoding of v (no HTML escaping), as enum and const values are written.
func literal(v any) (*expr, error) {
	var buf bytes.Buffer
	if err := encodeValue(&buf, v); err != nil {
		return nil, err
	}
	return lit(buf.String()), nil
}

// JSONObject is the grammar of any JSON object (response_format json_object).
func JSONObject() *Grammar {
	b := newJSONBuilder()
	root := b.rule("root")
	b.define(root, b.anyObject())
	g, err := b.compile(root)
	if err != nil {
		panic(err) // the generic grammar is fixed; it always compiles
	}
	return g
}

// orderKey holds, in each decoded object, its keys in document order (Go maps keep none; properties are
// written in the schema's order, as OpenAI does).
const orderKey = "\x00order"

// decodeOrdered decodes one JSON value (numbers as json.Number), recording each object's key order.
func decodeOrdered(dec *json.Decoder) (any, error) {
	t, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t {
	case json.Delim('{'):
		m := map[string]any{}
		var order []string
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return nil, err
			}
			key, _ := k.(string)
			v, err := decodeOrdered(dec)
			if err != nil {
				return nil, err
			}
			if _, dup := m[key]; !dup {
				order = append(order, key)
			}
			m[key] = v
		}
		if _, err := dec.Token(); err != nil {
			return nil, err
		}
		m[orderKey] = order
		return m, nil
	case json.Delim('['):
		list := []any{}
		for dec.More() {
			v, err := decodeOrdered(dec)
			if err != nil {
				return nil, err
			}
			list = append(list, v)
		}
		if _, err := dec.Token(); err != nil {
			return nil, err
		}
		return list, nil
	}
	return t, nil
}

// encodeValue writes v (as decodeOrdered returns it) as compact JSON in its key order.
func encodeValue(buf *bytes.Buffer, v any) error {
	switch x := v.(type) {
	case map[string]any:
		buf.WriteByte('{')
		order, _ := x[orderKey].([]string)
		for i, k := range order {
			if i > 0 {
				buf.WriteByte(',')
			}
			if err := encodeValue(buf, k); err != nil {
				return err
			}
			buf.WriteByte(':')
			if err := encodeValue(buf, x[k]); err != nil {
				return err
			}
		}
		buf.WriteByte('}')
		return nil
	case []any:
		buf.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				buf.WriteByte(',')
			}
			if err := encodeValue(buf, e); err != nil {
				return err
			}
		}
		buf.WriteByte(']')
		return nil
	}
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	buf.Truncate(buf.Len() - 1) // Encode's newline
	return nil
}
