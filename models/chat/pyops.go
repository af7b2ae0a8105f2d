package chat

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/ardanlabs/jinja"
)

// Python semantics for the operators and filters the rewriter (expr.go) routes to helpers.

const (
	varAdd    = "lorakit_add"
	varCat    = "lorakit_cat"
	varFormat = "lorakit_format"
	varToJSON = "lorakit_tojson"
	varTrim   = "lorakit_trim"
	varLength = "lorakit_length"
)

// pyFilters maps Jinja2 filters the engine lacks to their helpers.
var pyFilters = map[string]string{"format": varFormat, "tojson": varToJSON, "trim": varTrim, "length": varLength, "count": varLength}

// exprError names the expression an error comes from, as Jinja2's traceback would.
func exprError(table []exprInfo, id jinja.Value, err error) error {
	if id.IsInt() && id.AsInt() >= 0 && int(id.AsInt()) < len(table) {
		e := table[id.AsInt()]
		return fmt.Errorf("line %d: %s: %w", e.line, e.src, err)
	}
	return err
}

// pyTypeName is Python's type(v).__name__ for the value as Jinja2 would hold it.
func pyTypeName(v jinja.Value) string {
	switch {
	case v.IsNone():
		return "NoneType"
	case v.IsBool():
		return "bool"
	case v.IsInt():
		return "int"
	case v.IsFloat():
		return "float"
	case v.IsString():
		return "str"
	case v.IsList():
		return "list"
	case v.IsDict():
		return "dict"
	case v.IsUndefined():
		return "Undefined"
	}
	return "function"
}

// pyAdd is Python's a + b on the values Jinja2 would hold (bool counts as int, as in Python).
func pyAdd(a, b jinja.Value) (jinja.Value, error) {
	num := func(v jinja.Value) bool { return v.IsInt() || v.IsFloat() || v.IsBool() }
	switch {
	case a.IsString() && b.IsString():
		return jinja.NewString(a.AsString() + b.AsString()), nil
	case a.IsList() && b.IsList():
		items := make([]jinja.Value, 0, a.AsList().Len()+b.AsList().Len())
		items = append(items, a.AsList().Items...)
		return jinja.NewList(append(items, b.AsList().Items...)), nil
	case num(a) && num(b):
		if a.IsFloat() || b.IsFloat() {
			return jinja.NewFloat(pyFloat(a) + pyFloat(b)), nil
		}
		return jinja.NewInt(pyInt(a) + pyInt(b)), nil
	case a.IsString() && !b.IsUndefined():
		return jinja.Undefined(), fmt.Errorf("TypeError: can only concatenate str (not %q) to str", pyTypeName(b))
	case a.IsList() && !b.IsUndefined():
		return jinja.Undefined(), fmt.Errorf("TypeError: can only concatenate list (not %q) to list", pyTypeName(b))
	case !a.IsUndefined() && !b.IsUndefined():
		return jinja.Undefined(), fmt.Errorf("TypeError: unsupported operand type(s) for +: '%s' and '%s'", pyTypeName(a), pyTypeName(b))
	}
	return jinja.Undefined(), errUndefined
}

var errUndefined = errors.New("UndefinedError: an operand is undefined")

func pyInt(v jinja.Value) int64 {
	switch {
	case v.IsBool():
		if v.AsBool() {
			return 1
		}
		return 0
	case v.IsInt():
		return v.AsInt()
	case v.IsFloat():
		return int64(v.AsFloat())
	}
	return 0
}

func pyFloat(v jinja.Value) float64 {
	if v.IsFloat() {
		return v.AsFloat()
	}
	return float64(pyInt(v))
}

// pyStr is Python's str(v) (Undefined gives "", as Jinja2's Undefined.__str__).
func pyStr(v jinja.Value) string {
	switch {
	case v.IsUndefined():
		return ""
	case v.IsString():
		return v.AsString()
	}
	return pyRepr(v)
}

// pyRepr is Python's repr(v).
func pyRepr(v jinja.Value) string {
	switch {
	case v.IsUndefined():
		return ""
	case v.IsNone():
		return "None"
	case v.IsBool():
		if v.AsBool() {
			return "True"
		}
		return "False"
	case v.IsInt():
		return strconv.FormatInt(v.AsInt(), 10)
	case v.IsFloat():
		return pyFloatRepr(v.AsFloat())
	case v.IsString():
		return pyStrRepr(v.AsString())
	case v.IsList():
		var b strings.Builder
		b.WriteByte('[')
		for i, it := range v.AsList().Items {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(pyRepr(it))
		}
		b.WriteByte(']')
		return b.String()
	case v.IsDict():
		d := v.AsDict()
		var b strings.Builder
		b.WriteByte('{')
		for i, k := range d.OrderedKeys() {
			if i > 0 {
				b.WriteString(", ")
			}
			it, _ := d.Get(k)
			b.WriteString(pyStrRepr(k) + ": " + pyRepr(it))
		}
		b.WriteByte('}')
		return b.String()
	}
	return v.String()
}

// pyFloatRepr formats f as Python's repr(float): shortest round-trip digits, fixed notation for
// exponents in [-4, 16), always with a fractional part or an exponent.
func pyFloatRepr(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	case math.IsNaN(f):
		return "nan"
	}
	e := strconv.FormatFloat(f, 'e', -1, 64)
	_, expStr, _ := strings.Cut(e, "e")
	exp, _ := strconv.Atoi(expStr)
	if exp < -4 || exp >= 16 {
		return e
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.Contains(s, ".") {
		s += ".0"
	}
	return s
}

// pyStrRepr is Python's repr(str).
func pyStrRepr(s string) string {
	q := byte('\'')
	if strings.Contains(s, "'") && !strings.Contains(s, "\"") {
		q = '"'
	}
	var b strings.Builder
	b.WriteByte(q)
	for _, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\\`)
		case r == rune(q):
			b.WriteByte('\\')
			b.WriteByte(q)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r >= 0x80 && !unicode.IsPrint(r) && r != ' ':
			switch {
			case r <= 0xff:
				fmt.Fprintf(&b, `\x%02x`, r)
			case r <= 0xffff:
				fmt.Fprintf(&b, `\u%04x`, r)
			default:
				fmt.Fprintf(&b, `\U%08x`, r)
			}
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte(q)
	return b.String()
}

// pyPercent is Python's fmt % args (printf-style formatting) for the conversions s r d i f F x X o e E %
// with flags (-+ 0#), width and precision ('*' not supported). named selects the mapping form
// %(key)s, whose keys index named.
func pyPercent(format string, args []jinja.Value, named *jinja.Dict) (string, error) {
	var b strings.Builder
	next := 0
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		i++
		if i >= len(format) {
			return "", errors.New("ValueError: incomplete format")
		}
		var arg jinja.Value
		haveArg := false
		if format[i] == '(' {
			end := strings.IndexByte(format[i:], ')')
			if end < 0 {
				return "", errors.New("ValueError: incomplete format key")
			}
			key := format[i+1 : i+end]
			i += end + 1
			if named == nil {
				return "", errors.New("TypeError: format requires a mapping")
			}
			v, ok := named.Get(key)
			if !ok {
				return "", fmt.Errorf("KeyError: %s", pyStrRepr(key))
			}
			arg, haveArg = v, true
		}
		flags := ""
		for i < len(format) && strings.IndexByte("-+ 0#", format[i]) >= 0 {
			flags += string(format[i])
			i++
		}
		width, prec := -1, -1
		j := i
		for i < len(format) && format[i] >= '0' && format[i] <= '9' {
			i++
		}
		if i > j {
			width, _ = strconv.Atoi(format[j:i])
		}
		if i < len(format) && format[i] == '.' {
			i++
			j = i
			for i < len(format) && format[i] >= '0' && format[i] <= '9' {
				i++
			}
			prec, _ = strconv.Atoi("0" + format[j:i])
		}
		if i >= len(format) {
			return "", errors.New("ValueError: incomplete format")
		}
		conv := format[i]
		if conv == '%' {
			b.WriteByte('%')
			continue
		}
		if !strings.ContainsRune("srdifFxXoeEa", rune(conv)) || conv == 'a' {
			return "", fmt.Errorf("ValueError: unsupported format character %q (0x%x) at index %d", conv, conv, i)
		}
		if !haveArg {
			if named != nil && len(args) == 0 {
				return "", errors.New("TypeError: format requires a mapping")
			}
			if next >= len(args) {
				return "", errors.New("TypeError: not enough arguments for format string")
			}
			arg = args[next]
			next++
		}
		s, err := pyConvert(conv, flags, prec, arg)
		if err != nil {
			return "", err
		}
		b.WriteString(pad(s, width, flags, conv))
	}
	if named == nil && next < len(args) {
		return "", errors.New("TypeError: not all arguments converted during string formatting")
	}
	return b.String(), nil
}

// pyConvert formats one argument for a % conversion (without the width padding).
//
// complexity: one case per Python %-conversion type, as CPython's formatter has them.
func pyConvert(conv byte, flags string, prec int, v jinja.Value) (string, error) {
	sign := func(neg bool, s string) string {
		switch {
		case neg:
			return "-" + s
		case strings.Contains(flags, "+"):
			return "+" + s
		case strings.Contains(flags, " "):
			return " " + s
		}
		return s
	}
	switch conv {
	case 's', 'r':
		s := pyStr(v)
		if conv == 'r' {
			s = pyRepr(v)
		}
		if prec >= 0 && prec < len([]rune(s)) {
			s = string([]rune(s)[:prec])
		}
		return s, nil
	case 'd', 'i':
		if !(v.IsInt() || v.IsFloat() || v.IsBool()) {
			return "", fmt.Errorf("TypeError: %%%c format: a real number is required, not %s", conv, pyTypeName(v))
		}
		n := pyInt(v)
		if v.IsFloat() {
			if math.IsInf(v.AsFloat(), 0) || math.IsNaN(v.AsFloat()) {
				return "", errors.New("OverflowError: cannot convert float infinity or NaN to integer")
			}
			n = int64(math.Trunc(v.AsFloat()))
		}
		s := strconv.FormatUint(absU(n), 10)
		if prec > len(s) {
			s = strings.Repeat("0", prec-len(s)) + s
		}
		return sign(n < 0, s), nil
	case 'x', 'X', 'o':
		if !(v.IsInt() || v.IsBool()) {
			return "", fmt.Errorf("TypeError: %%%c format: an integer is required, not %s", conv, pyTypeName(v))
		}
		n := pyInt(v)
		base, prefix := 16, "0x"
		if conv == 'o' {
			base, prefix = 8, "0o"
		}
		s := strconv.FormatUint(absU(n), base)
		if prec > len(s) {
			s = strings.Repeat("0", prec-len(s)) + s
		}
		if strings.Contains(flags, "#") {
			s = prefix + s
		}
		if conv == 'X' {
			s = strings.ToUpper(s)
		}
		return sign(n < 0, s), nil
	default: // f F e E
		if !(v.IsInt() || v.IsFloat() || v.IsBool()) {
			return "", fmt.Errorf("TypeError: must be real number, not %s", pyTypeName(v))
		}
		f := pyFloat(v)
		if prec < 0 {
			prec = 6
		}
		var s string
		switch {
		case math.IsInf(f, 0):
			s = "inf"
		case math.IsNaN(f):
			s = "nan"
		default:
			s = strconv.FormatFloat(math.Abs(f), conv|0x20, prec, 64)
			if s != "" && strings.Contains(flags, "#") && prec == 0 && (conv == 'f' || conv == 'F') {
				s += "."
			}
		}
		if conv == 'F' || conv == 'E' {
			s = strings.ToUpper(s)
		}
		return sign(math.Signbit(f) && !math.IsNaN(f), s), nil
	}
}

func absU(n int64) uint64 {
	if n < 0 {
		return uint64(-(n + 1)) + 1
	}
	return uint64(n)
}

// pad applies a % conversion's width: left-justified with '-', zero-filled after the sign with '0'
// (numbers only), else right-justified with spaces.
func pad(s string, width int, flags string, conv byte) string {
	n := len([]rune(s))
	if width <= n {
		return s
	}
	fill := width - n
	switch {
	case strings.Contains(flags, "-"):
		return s + strings.Repeat(" ", fill)
	case strings.Contains(flags, "0") && conv != 's' && conv != 'r':
		k := 0
		if s != "" && (s[0] == '-' || s[0] == '+' || s[0] == ' ') {
			k = 1
		}
		if strings.HasPrefix(s[k:], "0x") || strings.HasPrefix(s[k:], "0X") || strings.HasPrefix(s[k:], "0o") {
			k += 2
		}
		return s[:k] + strings.Repeat("0", fill) + s[k:]
	}
	return strings.Repeat(" ", fill) + s
}

// pyFormatFilter is Jinja2's format filter: str(value) % args, or % kwargs (a mapping) when keyword
// arguments are given; both at once is an error.
func pyFormatFilter(value jinja.Value, args []jinja.Value, kwargs map[string]jinja.Value) (jinja.Value, error) {
	if len(args) > 0 && len(kwargs) > 0 {
		return jinja.Undefined(), errors.New("FilterArgumentError: can't handle positional and keyword arguments at the same time")
	}
	var named *jinja.Dict
	if len(kwargs) > 0 {
		d := jinja.NewDict()
		named = d.AsDict()
		for k, v := range kwargs {
			named.Set(k, v)
		}
	}
	s, err := pyPercent(pyStr(value), args, named)
	if err != nil {
		return jinja.Undefined(), fmt.Errorf("format filter: %w", err)
	}
	return jinja.NewString(s), nil
}

// pyJSON is transformers' tojson filter: json.dumps(v, ensure_ascii=False, indent=indent,
// separators=separators, sort_keys=sort_keys), keys in insertion order unless sorted.
func pyJSON(b *strings.Builder, v jinja.Value, indent string, hasIndent bool, itemSep, keySep string, sortKeys bool, depth int) error {
	if depth > 1000 {
		return errors.New("ValueError: value nested too deeply")
	}
	newline := func(level int) {
		if hasIndent {
			b.WriteByte('\n')
			b.WriteString(strings.Repeat(indent, level))
		}
	}
	switch {
	case v.IsNone():
		b.WriteString("null")
	case v.IsBool():
		b.WriteString(strconv.FormatBool(v.AsBool()))
	case v.IsInt():
		b.WriteString(strconv.FormatInt(v.AsInt(), 10))
	case v.IsFloat():
		f := v.AsFloat()
		switch {
		case math.IsNaN(f):
			b.WriteString("NaN")
		case math.IsInf(f, 1):
			b.WriteString("Infinity")
		case math.IsInf(f, -1):
			b.WriteString("-Infinity")
		default:
			b.WriteString(pyFloatRepr(f))
		}
	case v.IsString():
		pyJSONString(b, v.AsString())
	case v.IsList():
		items := v.AsList().Items
		if len(items) == 0 {
			b.WriteString("[]")
			return nil
		}
		b.WriteByte('[')
		for i, it := range items {
			if i > 0 {
				b.WriteString(itemSep)
			}
			newline(depth + 1)
			if err := pyJSON(b, it, indent, hasIndent, itemSep, keySep, sortKeys, depth+1); err != nil {
				return err
			}
		}
		newline(depth)
		b.WriteByte(']')
	case v.IsDict():
		d := v.AsDict()
		keys := d.OrderedKeys()
		if sortKeys {
			keys = append([]string(nil), keys...)
			slices.Sort(keys)
		}
		if len(keys) == 0 {
			b.WriteString("{}")
			return nil
		}
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteString(itemSep)
			}
			newline(depth + 1)
			pyJSONString(b, k)
			b.WriteString(keySep)
			it, _ := d.Get(k)
			if err := pyJSON(b, it, indent, hasIndent, itemSep, keySep, sortKeys, depth+1); err != nil {
				return err
			}
		}
		newline(depth)
		b.WriteByte('}')
	default:
		return fmt.Errorf("TypeError: Object of type %s is not JSON serializable", pyTypeName(v))
	}
	return nil
}

func pyJSONString(b *strings.Builder, s string) {
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		default:
			if r < 0x20 {
				fmt.Fprintf(b, `\u%04x`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
}

// pyToJSONFilter is the tojson filter with transformers' arguments (indent, separators, sort_keys,
// ensure_ascii ignored: always False as transformers passes it).
func pyToJSONFilter(value jinja.Value, args []jinja.Value, kwargs map[string]jinja.Value) (jinja.Value, error) {
	names := []string{"ensure_ascii", "indent", "separators", "sort_keys"}
	opt := map[string]jinja.Value{}
	for i, a := range args {
		if i >= len(names) {
			return jinja.Undefined(), errors.New("tojson: too many arguments")
		}
		opt[names[i]] = a
	}
	for k, v := range kwargs {
		if !slices.Contains(names, k) {
			return jinja.Undefined(), fmt.Errorf("tojson: unexpected keyword argument %q", k)
		}
		opt[k] = v
	}
	indent, hasIndent := "", false
	if v, ok := opt["indent"]; ok && !v.IsNone() && !v.IsUndefined() {
		hasIndent = true
		switch {
		case v.IsString():
			indent = v.AsString()
		case v.IsInt():
			indent = strings.Repeat(" ", int(max(v.AsInt(), 0)))
		default:
			return jinja.Undefined(), fmt.Errorf("tojson: indent must be an int or a string, not %s", pyTypeName(v))
		}
	}
	itemSep, keySep := ", ", ": "
	if hasIndent {
		itemSep = ","
	}
	if v, ok := opt["separators"]; ok && !v.IsNone() && !v.IsUndefined() {
		if !v.IsList() || v.AsList().Len() != 2 || !v.AsList().Items[0].IsString() || !v.AsList().Items[1].IsString() {
			return jinja.Undefined(), errors.New("tojson: separators must be two strings")
		}
		itemSep, keySep = v.AsList().Items[0].AsString(), v.AsList().Items[1].AsString()
	}
	sortKeys := false
	if v, ok := opt["sort_keys"]; ok {
		sortKeys = v.IsTruthy()
	}
	var b strings.Builder
	if err := pyJSON(&b, value, indent, hasIndent, itemSep, keySep, sortKeys, 0); err != nil {
		return jinja.Undefined(), fmt.Errorf("tojson: %w", err)
	}
	return jinja.NewString(b.String()), nil
}

// pyTrimFilter is Jinja2's trim: str(value).strip(chars), chars defaulting to Python whitespace.
func pyTrimFilter(value jinja.Value, args []jinja.Value) (jinja.Value, error) {
	chars := pyWhitespace
	if len(args) > 0 && !args[0].IsNone() {
		chars = pyStr(args[0])
	}
	return jinja.NewString(strings.Trim(pyStr(value), chars)), nil
}

// pyLengthFilter is Jinja2's length/count: len(value); Undefined has length 0, a number or None is an error.
func pyLengthFilter(value jinja.Value) (jinja.Value, error) {
	switch {
	case value.IsUndefined():
		return jinja.NewInt(0), nil
	case value.IsString():
		return jinja.NewInt(int64(len([]rune(value.AsString())))), nil
	case value.IsList():
		return jinja.NewInt(int64(value.AsList().Len())), nil
	case value.IsDict():
		return jinja.NewInt(int64(value.AsDict().Len())), nil
	}
	return jinja.Undefined(), fmt.Errorf("TypeError: object of type '%s' has no len()", pyTypeName(value))
}
