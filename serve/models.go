package serve

import (
	"net/http"
	"os"
	"path/filepath"

	"github.com/labstack/echo/v4"

	"github.com/lorakit/lorakit/serve/engine"
	"github.com/lorakit/lorakit/serve/openai"
)

// cards lists the base model, every loaded adapter and every adapter --adapter-dir can load on demand (not those
// whose files are missing or not regular files, nor those that failed to load recently).
func (s *Server) cards() []openai.ModelCard {
	base := s.name
	cards := []openai.ModelCard{{ID: s.name, Object: "model", Created: s.created, OwnedBy: "lorakit", Root: s.cfg.ModelRoot,
		MaxModelLen: s.maxLen, Permission: []any{}}}
	seen := map[string]bool{s.name: true}
	for _, a := range s.reg.List() {
		seen[a.Name] = true
		cards = append(cards, openai.ModelCard{ID: a.Name, Object: "model", Created: a.Created.Unix(), OwnedBy: "lorakit",
			Root: a.Path, Parent: &base, Permission: []any{}})
	}
	if s.cfg.AdapterDir != "" {
		ents, _ := os.ReadDir(s.cfg.AdapterDir)
		for _, e := range ents {
			n := e.Name()
			if seen[n] || !engine.ValidName(n) {
				continue
			}
			p := filepath.Join(s.cfg.AdapterDir, n)
			// Listed only when it can load: both files present and regular, and no recent failure to load it.
			if _, err := os.Stat(filepath.Join(p, "adapter_model.safetensors")); err != nil || engine.CheckFiles(p) != nil || s.reg.Failure(n) != nil {
				continue
			}
			cards = append(cards, openai.ModelCard{ID: n, Object: "model", Created: s.created, OwnedBy: "lorakit",
				Root: p, Parent: &base, Permission: []any{}})
		}
	}
	return cards
}

// handleModels is GET /v1/models.
func (s *Server) handleModels(c echo.Context) error {
	return writeJSON(c, http.StatusOK, openai.ModelList{Object: "list", Data: s.cards()})
}

// handleModel is GET /v1/models/{model}.
func (s *Server) handleModel(c echo.Context) error {
	name := c.Param("model")
	for _, card := range s.cards() {
		if card.ID == name {
			return writeJSON(c, http.StatusOK, card)
		}
	}
	return openai.ModelNotFound(name)
}
