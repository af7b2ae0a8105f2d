package serve

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// handleHealth is GET /health: 200 with an empty body while serving (503 once shutting down, from the middleware).
func (s *Server) handleHealth(c echo.Context) error {
	return c.NoContent(http.StatusOK)
}
