package hub

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/lorakit/lorakit/internal/atomicfile"
)

// Cache is a Hugging Face hub cache folder ($HF_HUB_CACHE) in the layout huggingface_hub writes and reads:
//
//	models--ORG--NAME/blobs/ETAG                     file contents, named by the hub's ETag (sha256 for LFS files,
//	                                                 the git blob sha1 otherwise)
//	models--ORG--NAME/snapshots/COMMIT/PATH          relative symlinks into blobs
//	models--ORG--NAME/refs/REVISION                  the commit a branch or tag pointed at when it was fetched
//
// A tree huggingface_hub made reads the same way, and huggingface_hub reads the trees Cache writes.
type Cache struct {
	Dir string
}

// ErrNotCached is returned by Resolve when a hub id is not in the cache and downloads are not allowed.
var ErrNotCached = errors.New("not in the Hugging Face cache")

// RepoDir is the cache folder of repo ("ORG/NAME").
func (c Cache) RepoDir(repo string) string {
	return filepath.Join(c.Dir, "models--"+strings.ReplaceAll(repo, "/", "--"))
}

var commitRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

// Snapshot returns the snapshot folder of repo at rev (a branch, tag or commit; "main" when empty) when the cache
// holds one.
func (c Cache) Snapshot(repo, rev string) (string, bool) {
	if rev == "" {
		rev = "main"
	}
	commit := rev
	if !commitRE.MatchString(rev) {
		b, err := os.ReadFile(filepath.Join(c.RepoDir(repo), "refs", filepath.FromSlash(rev)))
		if err != nil {
			return "", false
		}
		commit = strings.TrimSpace(string(b))
		if !commitRE.MatchString(commit) {
			return "", false
		}
	}
	dir := filepath.Join(c.RepoDir(repo), "snapshots", commit)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return "", false
	}
	return dir, true
}

// Download fetches repo at o.Revision into the cache (o.Dir is ignored) and returns the snapshot folder as
// Result.Dir. Each file's ETag and commit come from a HEAD of its resolve URL (X-Linked-Etag and X-Linked-Size
// for files the hub redirects to its CDN, X-Repo-Commit), its contents from the GET that follows the redirect;
// blobs resume from their .incomplete file, are checked against the tree's sha256 or git blob sha1 and renamed
// into place only when complete, so a snapshot link never points at a partial file. refs/REVISION is written last.
func (c Cache) Download(ctx context.Context, repo string, o Options) (*Result, error) {
	o = o.withDefaults()
	want, err := wanted(ctx, repo, o)
	if err != nil {
		return nil, err
	}
	rd := c.RepoDir(repo)
	res := &Result{Downloaded: []string{}, Skipped: []string{}}
	commit := ""
	for _, f := range want {
		if strings.Contains(f.Path, "..") || path.IsAbs(f.Path) {
			return res, fmt.Errorf("refusing file path %q", f.Path)
		}
		rev := o.Revision
		if commit != "" {
			rev = commit // every file from the commit the first one came from
		}
		u := fmt.Sprintf("%s/%s/resolve/%s/%s", o.Endpoint, repo, url.PathEscape(rev), escapePath(f.Path))
		meta, err := head(ctx, o, u)
		if err != nil {
			return res, fmt.Errorf("%s: %w", f.Path, err)
		}
		if commit == "" {
			commit = meta.commit
		} else if meta.commit != commit {
			return res, fmt.Errorf("%s: the hub answered commit %s, the other files came from %s", f.Path, meta.commit, commit)
		}
		if meta.size >= 0 && meta.size != f.Size {
			return res, fmt.Errorf("%s: the hub lists %d bytes and serves %d", f.Path, f.Size, meta.size)
		}
		if f.SHA256 != "" && meta.etag != f.SHA256 {
			return res, fmt.Errorf("%s: ETag %s is not the listed sha256 %s", f.Path, meta.etag, f.SHA256)
		}
		blob := filepath.Join(rd, "blobs", meta.etag)
		got, err := fetchBlob(ctx, o, u, blob, f)
		if err != nil {
			return res, fmt.Errorf("download %s: %w", f.Path, err)
		}
		if got < 0 {
			res.Skipped = append(res.Skipped, f.Path)
		} else {
			res.Downloaded = append(res.Downloaded, f.Path)
			res.Bytes += got
		}
		if err := linkSnapshot(filepath.Join(rd, "snapshots", commit), f.Path, blob); err != nil {
			return res, err
		}
	}
	if o.Revision != commit {
		ref := filepath.Join(rd, "refs", filepath.FromSlash(o.Revision))
		if err := os.MkdirAll(filepath.Dir(ref), 0o755); err != nil {
			return res, err
		}
		if err := atomicfile.WriteBytes(ref, []byte(commit)); err != nil {
			return res, err
		}
	}
	res.Dir = filepath.Join(rd, "snapshots", commit)
	return res, nil
}

type fileMeta struct {
	commit, etag string
	size         int64 // -1 when the hub sent none
}

// head asks the hub for a file's commit, ETag and size without following a redirect to the CDN (whose own ETag
// is not the file's hash), as huggingface_hub does.
func head(ctx context.Context, o Options, u string) (fileMeta, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
	if err != nil {
		return fileMeta{}, err
	}
	req.Header.Set("Accept-Encoding", "identity") // a compressed length is not the file's size
	if o.Token != "" {
		req.Header.Set("Authorization", "Bearer "+o.Token)
	}
	cl := *o.Client
	cl.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := cl.Do(req)
	if err != nil {
		return fileMeta{}, err
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return fileMeta{}, fmt.Errorf("%s: %s: %w", u, resp.Status, ErrUnauthorized)
	case resp.StatusCode >= 400:
		return fileMeta{}, fmt.Errorf("%s: %s", u, resp.Status)
	}
	h := resp.Header
	m := fileMeta{commit: h.Get("X-Repo-Commit"), etag: normalizeETag(h.Get("X-Linked-Etag")), size: -1}
	if m.etag == "" {
		m.etag = normalizeETag(h.Get("ETag"))
	}
	size := h.Get("X-Linked-Size")
	if size == "" && resp.StatusCode < 300 {
		size = h.Get("Content-Length")
	}
	if n, err := strconv.ParseInt(size, 10, 64); err == nil {
		m.size = n
	}
	if !commitRE.MatchString(m.commit) {
		return m, fmt.Errorf("%s: no commit hash in X-Repo-Commit (got %q): is HF_ENDPOINT a Hugging Face hub?", u, m.commit)
	}
	if m.etag == "" || strings.ContainsAny(m.etag, `/\.`) {
		return m, fmt.Errorf("%s: no usable ETag (got %q)", u, m.etag)
	}
	return m, nil
}

// normalizeETag drops the weak marker and quotes: W/"abc" → abc.
func normalizeETag(s string) string {
	return strings.Trim(strings.TrimPrefix(strings.TrimSpace(s), "W/"), `"`)
}

// fetchBlob brings one blob into place (resuming blob.incomplete) and returns the bytes received, or -1 when the
// blob was already there and correct.
func fetchBlob(ctx context.Context, o Options, u, blob string, f File) (int64, error) {
	if st, err := os.Stat(blob); err == nil && st.Size() == f.Size && verify(blob, f) == nil {
		return -1, nil
	}
	if err := os.MkdirAll(filepath.Dir(blob), 0o755); err != nil {
		return 0, err
	}
	part := blob + ".incomplete"
	var have int64
	if st, err := os.Stat(part); err == nil && st.Size() <= f.Size {
		have = st.Size()
	}
	got, err := download(ctx, o, u, part, have, f)
	if err != nil {
		return got, err
	}
	if err := verify(part, f); err != nil {
		os.Remove(part) // a corrupt file must not be resumed or kept
		return got, err
	}
	return got, os.Rename(part, blob)
}

// linkSnapshot makes snapshot/PATH a relative symlink to blob (as huggingface_hub does), replacing a link that
// points elsewhere.
func linkSnapshot(snapshot, file, blob string) error {
	dst := filepath.Join(snapshot, filepath.FromSlash(file))
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	rel, err := filepath.Rel(filepath.Dir(dst), blob)
	if err != nil {
		return err
	}
	if cur, err := os.Readlink(dst); err == nil && cur == rel {
		return nil
	}
	tmp := dst + ".lorakit-link"
	os.Remove(tmp)
	if err := os.Symlink(rel, tmp); err != nil {
		return fmt.Errorf("link %s: %w", dst, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("link %s: %w", dst, err)
	}
	return nil
}

// Ref is a hub reference ORG/NAME[@REVISION].
type Ref struct {
	Repo, Revision string // Revision "" means main
}

func (r Ref) String() string {
	if r.Revision == "" {
		return r.Repo
	}
	return r.Repo + "@" + r.Revision
}

var repoPartRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// ParseRef reads ORG/NAME or ORG/NAME@REVISION. Anything else (a path starting with . or /, more than one /,
// a scheme such as s3://) is not a hub reference.
func ParseRef(s string) (Ref, bool) {
	repo, rev, _ := strings.Cut(s, "@")
	org, name, ok := strings.Cut(repo, "/")
	if !ok || !repoPartRE.MatchString(org) || !repoPartRE.MatchString(name) || strings.Contains(name, "..") {
		return Ref{}, false
	}
	if strings.Contains(s, "@") && (rev == "" || strings.ContainsAny(rev, " \\") || strings.Contains(rev, "..")) {
		return Ref{}, false
	}
	return Ref{Repo: repo, Revision: rev}, true
}

// ResolveOptions configure Resolve.
type ResolveOptions struct {
	Options       // endpoint, token, include, client and progress of a download (Dir and Revision are ignored)
	Cache   Cache // the hub cache
	// Offline forbids network access (HF_HUB_OFFLINE=1): a hub id must already be in the cache.
	Offline bool
}

// Resolved is where a model or adapter reference points.
type Resolved struct {
	Dir string // a local folder
	Ref *Ref   // the hub reference, when it came from the hub
}

// Resolve turns what a user typed for a model or adapter into a local folder. An existing path is used as it is.
// Otherwise ORG/NAME[@REV] is looked up in the cache, without the network when the cache holds it, and
// downloaded into the cache when it does not (unless Offline). Anything else is an error naming it.
func Resolve(ctx context.Context, s string, o ResolveOptions) (Resolved, error) {
	if _, err := os.Stat(s); err == nil {
		return Resolved{Dir: s}, nil
	}
	ref, ok := ParseRef(s)
	if !ok {
		return Resolved{}, fmt.Errorf("%s: no such file or folder, and not a hub id ORG/NAME[@REVISION]", s)
	}
	if dir, ok := o.Cache.Snapshot(ref.Repo, ref.Revision); ok {
		return Resolved{Dir: dir, Ref: &ref}, nil
	}
	if o.Offline {
		return Resolved{}, fmt.Errorf("%s: %w at %s and HF_HUB_OFFLINE is set (run `lorakit pull %s` with network access)",
			s, ErrNotCached, o.Cache.Dir, ref)
	}
	do := o.Options
	do.Revision = ref.Revision
	res, err := o.Cache.Download(ctx, ref.Repo, do)
	if err != nil {
		return Resolved{}, fmt.Errorf("%s: %w", s, err)
	}
	return Resolved{Dir: res.Dir, Ref: &ref}, nil
}
