package hub

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// fakeHub serves a repository with the hub's tree API and resolve layout.
type fakeHub struct {
	files     map[string][]byte
	lfs       map[string]bool
	token     string
	badSHA    string       // path whose advertised sha256 is wrong
	cutOnce   atomic.Value // path whose first full download is cut halfway
	cutDone   atomic.Bool
	rangeHits atomic.Int32
	cdnHits   atomic.Int32
}

func (h *fakeHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.token != "" && r.Header.Get("Authorization") != "Bearer "+h.token {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	const tree = "/api/models/org/repo/tree/main"
	const resolve = "/org/repo/resolve/"
	switch {
	case r.URL.Path == tree:
		var out []map[string]any
		for p, b := range h.files {
			e := map[string]any{"type": "file", "path": p, "size": len(b)}
			if h.lfs[p] {
				s := sha256hex(b)
				if p == h.badSHA {
					s = strings.Repeat("0", 64)
				}
				e["lfs"] = map[string]any{"oid": s, "size": len(b)}
				e["oid"] = "ignored"
			} else {
				e["oid"] = gitOID(b)
			}
			out = append(out, e)
		}
		out = append(out, map[string]any{"type": "directory", "path": "sub"})
		json.NewEncoder(w).Encode(out)
	case strings.HasPrefix(r.URL.Path, resolve):
		// resolve/{main|COMMIT}/PATH: the hub answers with the commit and the file's ETag; LFS files redirect to
		// the CDN, their hash and size in X-Linked-Etag and X-Linked-Size (the real hub's headers).
		rev, p, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, resolve), "/")
		b, ok := h.files[p]
		if !ok || (rev != "main" && rev != fakeCommit) {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("X-Repo-Commit", fakeCommit)
		if h.lfs[p] {
			w.Header().Set("X-Linked-Etag", `"`+sha256hex(b)+`"`)
			w.Header().Set("X-Linked-Size", strconv.Itoa(len(b)))
			w.Header().Set("ETag", `W/"not-the-blob-hash"`)
			http.Redirect(w, r, "/cdn/"+p, http.StatusFound)
			return
		}
		w.Header().Set("ETag", `"`+gitOID(b)+`"`)
		h.serveFile(w, r, p, b)
	case strings.HasPrefix(r.URL.Path, "/cdn/"):
		p := strings.TrimPrefix(r.URL.Path, "/cdn/")
		h.cdnHits.Add(1)
		w.Header().Set("ETag", `"cdn-etag-differs"`)
		h.serveFile(w, r, p, h.files[p])
	default:
		http.NotFound(w, r)
	}
}

// fakeCommit is the fake hub's only commit.
const fakeCommit = "0123456789abcdef0123456789abcdef01234567"

func sha256hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func gitOID(b []byte) string {
	s := sha1.New()
	fmt.Fprintf(s, "blob %d\x00", len(b))
	s.Write(b)
	return hex.EncodeToString(s.Sum(nil))
}

// serveFile answers GET (with Range) and HEAD for one file, cutting the first full download of cutOnce.
func (h *fakeHub) serveFile(w http.ResponseWriter, r *http.Request, p string, b []byte) {
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	if r.Method == http.MethodHead {
		return
	}
	start := 0
	if rg := r.Header.Get("Range"); rg != "" {
		h.rangeHits.Add(1)
		start, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"))
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(b)-1, len(b)))
		w.Header().Set("Content-Length", strconv.Itoa(len(b)-start))
		w.WriteHeader(http.StatusPartialContent)
	}
	if cut, _ := h.cutOnce.Load().(string); cut == p && !h.cutDone.Load() {
		h.cutDone.Store(true)
		w.Write(b[:len(b)/2])
		panic(http.ErrAbortHandler) // drop the connection mid-body
	}
	w.Write(b[start:])
}

func newHub(t *testing.T) (*fakeHub, *httptest.Server) {
	big := make([]byte, 300_000)
	for i := range big {
		big[i] = byte(i * 7)
	}
	h := &fakeHub{
		files: map[string][]byte{
			"config.json":       []byte(`{"model_type":"llama"}`),
			"model.safetensors": big,
			"README.md":         []byte("# readme"),
			"tokenizer.json":    []byte(`{}`),
		},
		lfs: map[string]bool{"model.safetensors": true},
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return h, srv
}

func TestDownloadDefaultInclude(t *testing.T) {
	h, srv := newHub(t)
	dir := t.TempDir()
	res, err := Download(context.Background(), "org/repo", Options{Endpoint: srv.URL, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Downloaded) != 3 {
		t.Fatalf("downloaded %v", res.Downloaded)
	}
	if _, err := os.Stat(filepath.Join(dir, "README.md")); err == nil {
		t.Fatal("README.md is not needed by default")
	}
	got, _ := os.ReadFile(filepath.Join(dir, "model.safetensors"))
	if string(got) != string(h.files["model.safetensors"]) {
		t.Fatal("content differs")
	}
	res, err = Download(context.Background(), "org/repo", Options{Endpoint: srv.URL, Dir: dir})
	if err != nil || len(res.Skipped) != 3 || len(res.Downloaded) != 0 {
		t.Fatalf("second run: %+v, %v", res, err)
	}
}

func TestInclude(t *testing.T) {
	_, srv := newHub(t)
	dir := t.TempDir()
	res, err := Download(context.Background(), "org/repo", Options{Endpoint: srv.URL, Dir: dir, Include: []string{"*.md"}})
	if err != nil || len(res.Downloaded) != 1 || res.Downloaded[0] != "README.md" {
		t.Fatalf("%+v %v", res, err)
	}
}

func TestResumeAfterCut(t *testing.T) {
	h, srv := newHub(t)
	h.cutOnce.Store("model.safetensors")
	dir := t.TempDir()
	_, err := Download(context.Background(), "org/repo", Options{Endpoint: srv.URL, Dir: dir})
	if err == nil {
		t.Fatal("cut connection not reported")
	}
	if _, err := os.Stat(filepath.Join(dir, "model.safetensors")); err == nil {
		t.Fatal("incomplete file appeared under its final name")
	}
	st, err := os.Stat(filepath.Join(dir, "model.safetensors.incomplete"))
	if err != nil || st.Size() == 0 {
		t.Fatalf("no partial file kept: %v", err)
	}
	if _, err := Download(context.Background(), "org/repo", Options{Endpoint: srv.URL, Dir: dir}); err != nil {
		t.Fatal(err)
	}
	if h.rangeHits.Load() == 0 {
		t.Fatal("second run did not resume with a Range request")
	}
	got, _ := os.ReadFile(filepath.Join(dir, "model.safetensors"))
	if string(got) != string(h.files["model.safetensors"]) {
		t.Fatal("resumed content differs")
	}
}

func TestWrongChecksum(t *testing.T) {
	h, srv := newHub(t)
	h.badSHA = "model.safetensors"
	dir := t.TempDir()
	_, err := Download(context.Background(), "org/repo", Options{Endpoint: srv.URL, Dir: dir})
	if err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Fatalf("err = %v", err)
	}
	for _, name := range []string{"model.safetensors", "model.safetensors.incomplete"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			t.Fatalf("%s kept after a checksum mismatch", name)
		}
	}
}

func TestUnauthorized(t *testing.T) {
	h, srv := newHub(t)
	h.token = "secret"
	_, err := Download(context.Background(), "org/repo", Options{Endpoint: srv.URL, Dir: t.TempDir()})
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("err = %v", err)
	}
	if _, err := Download(context.Background(), "org/repo", Options{Endpoint: srv.URL, Dir: t.TempDir(), Token: "secret"}); err != nil {
		t.Fatal(err)
	}
}
