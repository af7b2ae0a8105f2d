package tokenizer

import (
	"encoding/json"
	"fmt"
)

// template is the single-sequence layout of a post-processor: ids before and after the sequence.
type template struct {
	before, after []int
}

// parsePostProcessor reduces tokenizers' post_processor to the ids it adds around one sequence.
func parsePostProcessor(raw json.RawMessage) (template, error) {
	var t template
	typ, ok, err := componentType(raw)
	if err != nil || !ok {
		return t, err
	}
	switch typ {
	case "Sequence":
		var v struct {
			Processors []json.RawMessage `json:"processors"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return t, err
		}
		for i, r := range v.Processors {
			sub, err := parsePostProcessor(r)
			if err != nil {
				return t, fmt.Errorf("processors[%d]: %w", i, err)
			}
			t.before = append(sub.before, t.before...)
			t.after = append(t.after, sub.after...)
		}
		return t, nil
	case "ByteLevel":
		return t, nil
	case "TemplateProcessing":
		var v struct {
			Single []struct {
				SpecialToken *struct {
					ID string `json:"id"`
				} `json:"SpecialToken"`
				Sequence *struct {
					ID string `json:"id"`
				} `json:"Sequence"`
			} `json:"single"`
			SpecialTokens map[string]struct {
				IDs []int `json:"ids"`
			} `json:"special_tokens"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return t, err
		}
		seen := false
		for i, item := range v.Single {
			switch {
			case item.Sequence != nil:
				seen = true
			case item.SpecialToken != nil:
				st, ok := v.SpecialTokens[item.SpecialToken.ID]
				if !ok {
					return t, fmt.Errorf("TemplateProcessing single[%d]: special token %q missing from special_tokens", i, item.SpecialToken.ID)
				}
				if seen {
					t.after = append(t.after, st.IDs...)
				} else {
					t.before = append(t.before, st.IDs...)
				}
			}
		}
		return t, nil
	case "RobertaProcessing", "BertProcessing":
		var v struct {
			Sep []json.RawMessage `json:"sep"`
			Cls []json.RawMessage `json:"cls"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return t, err
		}
		get := func(pair []json.RawMessage, name string) (int, error) {
			if len(pair) != 2 {
				return 0, fmt.Errorf("%s: %s must be [token, id]", typ, name)
			}
			var id int
			if err := json.Unmarshal(pair[1], &id); err != nil {
				return 0, fmt.Errorf("%s: %s id: %w", typ, name, err)
			}
			return id, nil
		}
		cls, err := get(v.Cls, "cls")
		if err != nil {
			return t, err
		}
		sep, err := get(v.Sep, "sep")
		if err != nil {
			return t, err
		}
		return template{before: []int{cls}, after: []int{sep}}, nil
	}
	return t, fmt.Errorf("post_processor type %q is not supported", typ)
}
