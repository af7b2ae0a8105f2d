package serve

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/lorakit/lorakit/serve/engine"
	"github.com/lorakit/lorakit/serve/openai"
)

// handleLoadLoRA is vLLM's POST /v1/load_lora_adapter {"lora_name","lora_path"}. Loading an existing name
// replaces it atomically: requests already running finish on the old version.
func (s *Server) handleLoadLoRA(c echo.Context) error {
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	req, oe := openai.DecodeLoad(body)
	if oe != nil {
		return oe
	}
	if req.LoRAName == s.name {
		return openai.BadRequest("lora_name", "The lora adapter name '%s' is the served base model name.", req.LoRAName)
	}
	if err := s.reg.Load(req.LoRAName, req.LoRAPath); err != nil {
		if errors.Is(err, engine.ErrAdapterNotFound) {
			return openai.NotFound(fmt.Sprintf("No adapter found for %s: %s", req.LoRAPath, s.redact(err)))
		}
		return openai.BadRequest("lora_path", "Failed to load LoRA adapter '%s': %s", req.LoRAName, s.redact(err))
	}
	return c.String(http.StatusOK, fmt.Sprintf("Success: LoRA adapter '%s' added successfully.", req.LoRAName))
}

// handleUnloadLoRA is vLLM's POST /v1/unload_lora_adapter {"lora_name"}. It returns once requests running on the
// adapter have finished; new requests for the name get 404 at once.
func (s *Server) handleUnloadLoRA(c echo.Context) error {
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	req, oe := openai.DecodeUnload(body)
	if oe != nil {
		return oe
	}
	if err := s.reg.Unload(c.Request().Context(), req.LoRAName); err != nil {
		if errors.Is(err, context.Canceled) {
			return err // the client stopped waiting (the adapter is unloaded anyway): a 499, not a server error
		}
		if errors.Is(err, engine.ErrAdapterNotFound) {
			return openai.NotFound(fmt.Sprintf("The lora adapter '%s' cannot be found.", req.LoRAName))
		}
		return openai.Internal("unloading '%s': %v", req.LoRAName, err)
	}
	s.log.Info("adapter unloaded", "adapter", req.LoRAName)
	return c.String(http.StatusOK, fmt.Sprintf("Success: LoRA adapter '%s' removed successfully.", req.LoRAName))
}
