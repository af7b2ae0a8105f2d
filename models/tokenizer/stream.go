package tokenizer

// StreamDecoder turns ids into text one at a time, as a model generates them. It never returns part of a
// UTF-8 character, and the concatenation of everything Add and Flush return equals Decode of all the ids
// (leading-space stripping, byte-fallback runs and clean-up included). Not safe for concurrent use.
type StreamDecoder struct {
	t    *Tokenizer
	skip bool
	// toks is the decoding window: one token of context (already emitted) plus the tokens since.
	toks []string
	// done is how many bytes of decodeTokens(toks) were already emitted.
	done int
	// pend is text held back from clean-up until no clean-up pattern can span it.
	pend string
}

// NewStreamDecoder starts a stream; skipSpecial drops special tokens as Decode does.
func (t *Tokenizer) NewStreamDecoder(skipSpecial bool) *StreamDecoder {
	return &StreamDecoder{t: t, skip: skipSpecial}
}

func (d *StreamDecoder) window() string {
	toks := append([]string(nil), d.toks...) // decoders may rewrite the slice
	return d.t.decodeTokens(toks)
}

// Add feeds one id and returns the text that became final.
func (d *StreamDecoder) Add(id int) string {
	toks := d.t.tokenStrings([]int{id}, d.skip)
	if len(toks) == 0 {
		return ""
	}
	tok := toks[0]
	d.toks = append(d.toks, tok)
	if d.t.hasByteFallbackDec {
		if _, ok := byteFallbackToken(tok); ok {
			return "" // a byte run decodes only once it ends
		}
	}
	raw := d.window()
	cut := len(raw) - incompleteTail([]byte(raw))
	out := ""
	if cut > d.done {
		out = lossyUTF8([]byte(raw[d.done:cut]))
		d.done = cut
	}
	if cut == len(raw) && d.done == cut {
		// Everything is out: keep the last token as context for the next one, unless it decodes to nothing
		// on its own (then a Strip or Metaspace decoder would treat the next token as the first).
		ctx := []string{tok}
		if base := d.t.decodeTokens(append([]string(nil), ctx...)); base != "" {
			d.toks = append(d.toks[:0], ctx...)
			d.done = len(base)
		}
	}
	return d.clean(out, false)
}

// Flush returns whatever is still held back (an unfinished byte sequence decodes to U+FFFD, as in Decode).
func (d *StreamDecoder) Flush() string {
	out := ""
	if len(d.toks) > 0 {
		raw := d.window()
		if d.done <= len(raw) {
			out = lossyUTF8([]byte(raw[d.done:]))
		}
		last := d.toks[len(d.toks)-1]
		if base := d.t.decodeTokens([]string{last}); base != "" {
			d.toks = append(d.toks[:0], last)
			d.done = len(base)
		} else {
			d.done = len(raw)
		}
	}
	return d.clean(out, true)
}

// clean applies transformers' clean-up to the stream, emitting only text that later input cannot change.
func (d *StreamDecoder) clean(s string, final bool) string {
	if !d.t.config.CleanUpTokenizationSpaces {
		return s
	}
	d.pend += s
	if final {
		out := cleanUpTokenization(d.pend)
		d.pend = ""
		return out
	}
	cut := len(d.pend)
	for cut > 0 && !cleanUpSafe(d.pend[cut-1]) {
		cut--
	}
	out := cleanUpTokenization(d.pend[:cut])
	d.pend = d.pend[cut:]
	return out
}

// Prime feeds ids (typically the prompt) as context without producing text: the next Add decodes in
// context (a SentencePiece leading space is kept, a character split across the prompt's end completes),
// and no held-back prompt text leaks into the output, as it would when the prompt is fed through Add.
func (d *StreamDecoder) Prime(ids []int) {
	for _, id := range ids {
		d.Add(id)
	}
	// Prompt text still held back (a trailing byte-fallback run such as "<0x0A>", or clean-up) is context
	// too: mark it emitted so that it does not come out with the first generated token.
	if len(d.toks) > 0 {
		raw := d.window()
		if n := len(raw) - incompleteTail([]byte(raw)); n > d.done {
			d.done = n
		}
	}
	d.pend = ""
}
