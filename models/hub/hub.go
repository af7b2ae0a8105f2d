// Package hub downloads model and adapter repositories from a Hugging Face hub: it lists a revision's files
// with the tree API, fetches each through the `resolve` URL layout, resumes partial downloads with HTTP ranges,
// verifies sizes and hashes, and moves each file into place only when it is complete and correct.
package hub

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// DefaultEndpoint is the public hub; HF_ENDPOINT overrides it (read by the caller).
const DefaultEndpoint = "https://huggingface.co"

// DefaultInclude are the files lorakit needs from a model or adapter repository.
var DefaultInclude = []string{
	"config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
	"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
	"adapter_config.json",
}

// Options configure a download.
type Options struct {
	Endpoint string   // hub base URL
	Token    string   // bearer token (HF_TOKEN), optional
	Revision string   // branch, tag or commit; "main" when empty
	Dir      string   // destination folder
	Include  []string // glob patterns over repository paths; DefaultInclude when empty
	Client   *http.Client
	// Progress, when set, is told about each file and the bytes received.
	Progress func(file string, done, total int64)
}

// File is one repository file as the tree API lists it.
type File struct {
	Path   string
	Size   int64
	SHA256 string // LFS files only
	GitOID string // git blob sha1 of non-LFS files
}

// Result lists what a download fetched and what was already present.
type Result struct {
	Dir        string   `json:"dir"`
	Downloaded []string `json:"downloaded"`
	Skipped    []string `json:"skipped"`
	Bytes      int64    `json:"bytes"`
}

// ErrUnauthorized is returned for 401/403 answers (missing or wrong token, gated repository).
var ErrUnauthorized = errors.New("unauthorized: set HF_TOKEN to a token with access to this repository")

// Download fetches repo (e.g. "HuggingFaceTB/SmolLM2-135M-Instruct") into o.Dir.
func Download(ctx context.Context, repo string, o Options) (*Result, error) {
	o = o.withDefaults()
	want, err := wanted(ctx, repo, o)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	res := &Result{Dir: o.Dir, Downloaded: []string{}, Skipped: []string{}}
	for _, f := range want {
		got, err := fetch(ctx, repo, f, o)
		if err != nil {
			return res, err
		}
		if got < 0 {
			res.Skipped = append(res.Skipped, f.Path)
			continue
		}
		res.Downloaded = append(res.Downloaded, f.Path)
		res.Bytes += got
	}
	return res, nil
}

func (o Options) withDefaults() Options {
	if o.Endpoint == "" {
		o.Endpoint = DefaultEndpoint
	}
	o.Endpoint = strings.TrimRight(o.Endpoint, "/")
	if o.Revision == "" {
		o.Revision = "main"
	}
	if len(o.Include) == 0 {
		o.Include = DefaultInclude
	}
	if o.Client == nil {
		o.Client = http.DefaultClient
	}
	return o
}

func matchAny(globs []string, p string) bool {
	for _, g := range globs {
		if ok, _ := path.Match(g, p); ok {
			return true
		}
		if ok, _ := path.Match(g, path.Base(p)); ok && !strings.Contains(g, "/") && !strings.Contains(p, "/") {
			return true
		}
	}
	return false
}

// List returns every file of the revision, following the tree API's pagination (Link: <...>; rel="next").
func List(ctx context.Context, repo string, o Options) ([]File, error) {
	o = o.withDefaults()
	if err := checkRepoID(repo); err != nil {
		return nil, err
	}
	next := fmt.Sprintf("%s/api/models/%s/tree/%s?recursive=true", o.Endpoint, repo, url.PathEscape(o.Revision))
	var files []File
	for next != "" {
		resp, err := get(ctx, o, next, "")
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", repo, err)
		}
		var entries []struct {
			Type string `json:"type"`
			Path string `json:"path"`
			Size int64  `json:"size"`
			OID  string `json:"oid"`
			LFS  *struct {
				OID  string `json:"oid"`
				Size int64  `json:"size"`
			} `json:"lfs"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&entries)
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("list %s: decode tree: %w", repo, err)
		}
		for _, e := range entries {
			if e.Type != "file" {
				continue
			}
			f := File{Path: e.Path, Size: e.Size, GitOID: e.OID}
			if e.LFS != nil {
				f.SHA256, f.Size, f.GitOID = e.LFS.OID, e.LFS.Size, ""
			}
			files = append(files, f)
		}
		next = nextLink(resp.Header.Get("Link"))
	}
	return files, nil
}

func checkRepoID(repo string) error {
	parts := strings.Split(repo, "/")
	if len(parts) > 2 || repo == "" {
		return fmt.Errorf("repository id %q: want NAME or OWNER/NAME", repo)
	}
	for _, p := range parts {
		if p == "" || p == "." || p == ".." {
			return fmt.Errorf("repository id %q: want NAME or OWNER/NAME", repo)
		}
	}
	return nil
}

func nextLink(h string) string {
	for _, part := range strings.Split(h, ",") {
		if strings.Contains(part, `rel="next"`) {
			if i, j := strings.Index(part, "<"), strings.Index(part, ">"); i >= 0 && j > i {
				return part[i+1 : j]
			}
		}
	}
	return ""
}

// get performs an authorised GET; rangeFrom is a Range header value or "".
func get(ctx context.Context, o Options, u, rangeHdr string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if o.Token != "" {
		req.Header.Set("Authorization", "Bearer "+o.Token)
	}
	if rangeHdr != "" {
		req.Header.Set("Range", rangeHdr)
	}
	resp, err := o.Client.Do(req)
	if err != nil {
		return nil, err
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		resp.Body.Close()
		return nil, fmt.Errorf("%s: %s: %w", u, resp.Status, ErrUnauthorized)
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		return resp, nil
	case resp.StatusCode >= 300:
		resp.Body.Close()
		return nil, fmt.Errorf("%s: %s", u, resp.Status)
	}
	return resp, nil
}

// fetch brings one file into o.Dir and returns the bytes received, or -1 when it was already complete.
func fetch(ctx context.Context, repo string, f File, o Options) (int64, error) {
	if strings.Contains(f.Path, "..") || path.IsAbs(f.Path) {
		return 0, fmt.Errorf("refusing file path %q", f.Path)
	}
	dst := filepath.Join(o.Dir, filepath.FromSlash(f.Path))
	if st, err := os.Stat(dst); err == nil && st.Size() == f.Size && verify(dst, f) == nil {
		return -1, nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return 0, err
	}
	part := dst + ".incomplete"
	var have int64
	if st, err := os.Stat(part); err == nil && st.Size() <= f.Size {
		have = st.Size()
	}
	u := fmt.Sprintf("%s/%s/resolve/%s/%s", o.Endpoint, repo, url.PathEscape(o.Revision), escapePath(f.Path))
	got, err := download(ctx, o, u, part, have, f)
	if err != nil {
		return got, fmt.Errorf("download %s: %w", f.Path, err)
	}
	if err := verify(part, f); err != nil {
		os.Remove(part) // a corrupt file must not be resumed or kept
		return got, fmt.Errorf("download %s: %w", f.Path, err)
	}
	if err := os.Rename(part, dst); err != nil {
		return got, err
	}
	return got, nil
}

func escapePath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return strings.Join(parts, "/")
}

// download appends the missing bytes of a file to part, restarting from zero if the server ignores the range.
func download(ctx context.Context, o Options, u, part string, have int64, f File) (int64, error) {
	rangeHdr := ""
	if have > 0 {
		rangeHdr = "bytes=" + strconv.FormatInt(have, 10) + "-"
	}
	resp, err := get(ctx, o, u, rangeHdr)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	flags := os.O_CREATE | os.O_WRONLY
	switch resp.StatusCode {
	case http.StatusPartialContent:
		flags |= os.O_APPEND
	case http.StatusRequestedRangeNotSatisfiable:
		return 0, nil // already have it all; verify decides
	default:
		flags |= os.O_TRUNC
		have = 0
	}
	out, err := os.OpenFile(part, flags, 0o644)
	if err != nil {
		return 0, err
	}
	w := &progressWriter{w: out, done: have, total: f.Size, file: f.Path, fn: o.Progress}
	n, err := io.Copy(w, io.LimitReader(resp.Body, f.Size-have+1))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, fmt.Errorf("after %d bytes (rerun to resume): %w", have+n, err)
	}
	return n, nil
}

type progressWriter struct {
	w           io.Writer
	done, total int64
	file        string
	fn          func(string, int64, int64)
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.done += int64(n)
	if p.fn != nil {
		p.fn(p.file, p.done, p.total)
	}
	return n, err
}

// verify checks a local file's size and, where the hub gave one, its sha256 (LFS) or git blob sha1.
func verify(p string, f File) error {
	fh, err := os.Open(p)
	if err != nil {
		return err
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return err
	}
	if st.Size() != f.Size {
		return fmt.Errorf("size %d, hub says %d", st.Size(), f.Size)
	}
	var h hash.Hash
	want := ""
	switch {
	case f.SHA256 != "":
		h, want = sha256.New(), f.SHA256
	case len(f.GitOID) == 40:
		h, want = sha1.New(), f.GitOID
		fmt.Fprintf(h, "blob %d\x00", f.Size)
	default:
		return nil
	}
	if _, err := io.Copy(h, fh); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("checksum mismatch: got %s, hub says %s", got, want)
	}
	return nil
}

// wanted lists repo at o.Revision and keeps the files o.Include matches; none is an error naming the patterns.
func wanted(ctx context.Context, repo string, o Options) ([]File, error) {
	files, err := List(ctx, repo, o)
	if err != nil {
		return nil, err
	}
	var want []File
	for _, f := range files {
		if matchAny(o.Include, f.Path) {
			want = append(want, f)
		}
	}
	if len(want) == 0 {
		return nil, fmt.Errorf("%s@%s: no file matches %v", repo, o.Revision, o.Include)
	}
	return want, nil
}
