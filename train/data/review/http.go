package review

import (
	"context"
	"crypto/subtle"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"mime"
	"net"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

//go:embed page
var pageFS embed.FS

// maxBody bounds a request body: a bulk decision over a large filter, or one edited example.
const maxBody = 64 << 20

// Handler serves the page and the API:
//
//	GET  /                  the page (and its app.js, app.css)
//	GET  /api/info          Info
//	GET  /api/rows          {"fields": [...], "rows": [Row...]}
//	GET  /api/examples/:line Detail
//	GET  /api/search?q=     {"lines": [...]}
//	POST /api/decisions     {"changes": [Change...]} → {"rows": [Row...], "info": Info}
//
// The API wants the token when one is set, and every request a loopback Host (a page on another site
// cannot reach the server by pointing its own name at 127.0.0.1: DNS rebinding) unless Options.AnyHost, where
// the token, required then, does that. A POST must say
// Content-Type: application/json, which a cross-site form cannot send without the preflight this server
// never answers.
func (r *Reviewer) Handler() http.Handler {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		code, msg := http.StatusInternalServerError, err.Error()
		var he *echo.HTTPError
		if errors.As(err, &he) {
			code, msg = he.Code, fmt.Sprint(he.Message)
		}
		_ = c.JSON(code, map[string]string{"error": msg})
	}
	if r.opts.AnyHost {
		e.Use(recoverMW) // Open made sure a token guards the API
	} else {
		e.Use(loopbackHost, recoverMW)
	}
	e.GET("/", servePage("index.html"))
	e.GET("/app.js", servePage("app.js"))
	e.GET("/app.css", servePage("app.css"))
	api := e.Group("/api", r.tokenMW, jsonPostMW)
	api.GET("/info", func(c echo.Context) error { return c.JSON(http.StatusOK, r.Info()) })
	api.GET("/rows", r.handleRows)
	api.GET("/examples/:line", r.handleExample)
	api.GET("/search", r.handleSearch)
	api.POST("/decisions", r.handleDecisions)
	return e
}

func servePage(name string) echo.HandlerFunc {
	return func(c echo.Context) error {
		b, err := fs.ReadFile(pageFS, path.Join("page", name))
		if err != nil {
			return err
		}
		c.Response().Header().Set("Cache-Control", "no-cache")
		c.Response().Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; img-src 'self' data:")
		return c.Blob(http.StatusOK, mime.TypeByExtension(path.Ext(name)), b)
	}
}

func (r *Reviewer) handleRows(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]any{"fields": r.ix.fields, "rows": r.Rows()})
}

func (r *Reviewer) handleExample(c echo.Context) error {
	line, err := strconv.Atoi(c.Param("line"))
	if err != nil {
		return echo.NewHTTPError(http.StatusBadRequest, "line: not a number")
	}
	d, err := r.Example(line)
	if errors.Is(err, ErrNoLine) {
		return echo.NewHTTPError(http.StatusNotFound, err.Error())
	}
	if err != nil {
		return echo.NewHTTPError(http.StatusConflict, err.Error())
	}
	return c.JSON(http.StatusOK, d)
}

func (r *Reviewer) handleSearch(c echo.Context) error {
	lines, err := r.Search(c.QueryParam("q"))
	if err != nil {
		return echo.NewHTTPError(http.StatusBadRequest, err.Error())
	}
	return c.JSON(http.StatusOK, map[string]any{"lines": lines})
}

func (r *Reviewer) handleDecisions(c echo.Context) error {
	var req struct {
		Changes []Change `json:"changes"`
	}
	c.Request().Body = http.MaxBytesReader(c.Response(), c.Request().Body, maxBody)
	if err := c.Bind(&req); err != nil {
		return echo.NewHTTPError(http.StatusBadRequest, "body: "+fmt.Sprint(err))
	}
	rows, err := r.Decide(req.Changes)
	if errors.Is(err, ErrBadChange) {
		return echo.NewHTTPError(http.StatusBadRequest, err.Error())
	}
	if err != nil {
		return err // the save failed: a 500 the page shows, and nothing was applied
	}
	return c.JSON(http.StatusOK, map[string]any{"rows": rows, "info": r.Info()})
}

// tokenMW checks the token (constant time) when one is set.
func (r *Reviewer) tokenMW(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if r.opts.Token == "" {
			return next(c)
		}
		got := c.Request().Header.Get("X-Lorakit-Token")
		if a := c.Request().Header.Get("Authorization"); got == "" && strings.HasPrefix(a, "Bearer ") {
			got = strings.TrimPrefix(a, "Bearer ")
		}
		if got == "" {
			got = c.QueryParam("token")
		}
		if subtle.ConstantTimeCompare([]byte(got), []byte(r.opts.Token)) != 1 {
			return echo.NewHTTPError(http.StatusUnauthorized, "missing or wrong token (open the address lorakit data review printed, with its #token=…)")
		}
		return next(c)
	}
}

func jsonPostMW(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if c.Request().Method == http.MethodPost {
			ct, _, _ := mime.ParseMediaType(c.Request().Header.Get("Content-Type"))
			if ct != "application/json" {
				return echo.NewHTTPError(http.StatusUnsupportedMediaType, "Content-Type must be application/json")
			}
		}
		return next(c)
	}
}

// loopbackHost refuses a Host header that does not name this machine.
func loopbackHost(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		host := c.Request().Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.Trim(host, "[]")
		if ip := net.ParseIP(host); !(strings.EqualFold(host, "localhost") || ip != nil && ip.IsLoopback()) {
			return echo.NewHTTPError(http.StatusMisdirectedRequest, "this review server answers only to 127.0.0.1 or localhost")
		}
		return next(c)
	}
}

func recoverMW(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("internal error: %v", p)
			}
		}()
		return next(c)
	}
}

// Serve answers on ln until ctx ends, then stops accepting and lets requests in flight finish (each is
// short: every save is on disk before its reply).
func (r *Reviewer) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: r.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return srv.Close()
	}
	return nil
}
