package serve

import (
	"errors"
	"net/http"
	"runtime/debug"

	"github.com/labstack/echo/v4"

	"github.com/lorakit/lorakit/models/chat"
	"github.com/lorakit/lorakit/serve/openai"
)

// checkModel makes sure name is the base model or an adapter the server has or can load (they share the
// base's tokenizer).
func (s *Server) checkModel(c echo.Context, name string) error {
	if name == s.name || s.reg.Has(name) {
		return nil
	}
	l, err := s.lease(c.Request().Context(), name)
	if err != nil {
		return err
	}
	if l != nil {
		l.Release()
	}
	return nil
}

// handleTokenize is POST /tokenize (vLLM's): a prompt, or chat messages through the chat template.
func (s *Server) handleTokenize(c echo.Context) error {
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	req, oe := openai.DecodeTokenize(body)
	if oe != nil {
		return oe
	}
	if err := s.checkModel(c, req.Model); err != nil {
		return err
	}
	text := req.Prompt
	if req.Messages != nil {
		text, err = s.model.RenderChat(req.Messages, req.Tools, req.Kwargs)
		if errors.Is(err, chat.ErrTemplateNoTools) {
			return openai.BadRequest("tools", "this model's chat template cannot take tools: %v", err)
		}
		if err != nil {
			return openai.BadRequest("messages", "the chat template failed on these messages: %v", err)
		}
	}
	ids := s.model.Encode(text, req.AddSpecial)
	out := openai.TokenizeResponse{Count: len(ids), MaxModelLen: s.maxLen, Tokens: ids}
	if req.TokenStrs {
		out.TokenStrs = make([]string, len(ids))
		for i, id := range ids {
			out.TokenStrs[i] = s.model.TokenText(id)
		}
	}
	return writeJSON(c, http.StatusOK, out)
}

// handleDetokenize is POST /detokenize (vLLM's): token ids to text, special tokens skipped.
func (s *Server) handleDetokenize(c echo.Context) error {
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	req, oe := openai.DecodeDetokenize(body, s.model.VocabSize())
	if oe != nil {
		return oe
	}
	if err := s.checkModel(c, req.Model); err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, openai.DetokenizeResponse{Prompt: s.model.Decode(req.Tokens)})
}

// handleVersion is GET /version: the server's version (Config.Version, else the binary's module version).
func (s *Server) handleVersion(c echo.Context) error {
	v := s.cfg.Version
	if v == "" {
		v = "(devel)"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
			v = bi.Main.Version
		}
	}
	return writeJSON(c, http.StatusOK, openai.VersionResponse{Version: v})
}
