package openai

import "bytes"

// ModelList is `GET /v1/models`.
type ModelList struct {
	Object string      `json:"object"` // "list"
	Data   []ModelCard `json:"data"`
}

// ModelCard is one model (vLLM lineage fields: root, parent; max_model_len on the base).
type ModelCard struct {
	ID          string  `json:"id"`
	Object      string  `json:"object"` // "model"
	Created     int64   `json:"created"`
	OwnedBy     string  `json:"owned_by"`
	Root        string  `json:"root"`
	Parent      *string `json:"parent"`
	MaxModelLen int     `json:"max_model_len,omitempty"`
	Permission  []any   `json:"permission"`
}

// LoadLoRARequest is vLLM's `POST /v1/load_lora_adapter`.
type LoadLoRARequest struct {
	LoRAName    string `json:"lora_name"`
	LoRAPath    string `json:"lora_path"`
	LoadInplace bool   `json:"load_inplace"`
}

// UnloadLoRARequest is vLLM's `POST /v1/unload_lora_adapter`.
type UnloadLoRARequest struct {
	LoRAName  string `json:"lora_name"`
	LoRAIntID *int   `json:"lora_int_id"`
}

// DecodeLoad validates a load request with vLLM's message for missing fields.
func DecodeLoad(body []byte) (*LoadLoRARequest, *Error) {
	var r LoadLoRARequest
	if len(bytes.TrimSpace(body)) > 0 {
		if e := decodeJSON(body, &r); e != nil {
			return nil, e
		}
	}
	if r.LoRAName == "" || r.LoRAPath == "" {
		return nil, BadRequest("", "Both 'lora_name' and 'lora_path' must be provided.")
	}
	return &r, nil
}

// DecodeUnload validates an unload request.
func DecodeUnload(body []byte) (*UnloadLoRARequest, *Error) {
	var r UnloadLoRARequest
	if len(bytes.TrimSpace(body)) > 0 {
		if e := decodeJSON(body, &r); e != nil {
			return nil, e
		}
	}
	if r.LoRAName == "" {
		return nil, BadRequest("lora_name", "'lora_name' needs to be provided to unload a LoRA adapter.")
	}
	return &r, nil
}
