package hub

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// walkCache lists every entry under root as "path -> link target" for symlinks and "path" otherwise.
func walkCache(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		if fi.Mode()&os.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			rel += " -> " + filepath.ToSlash(target)
		} else if fi.IsDir() {
			rel += "/"
		}
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// TestCacheLayout: pull into the cache writes exactly the layout huggingface_hub documents (blobs named by the
// hub's ETag, relative snapshot links, refs/main holding the commit), through a CDN redirect for LFS files.
func TestCacheLayout(t *testing.T) {
	h, srv := newHub(t)
	c := Cache{Dir: t.TempDir()}
	res, err := c.Download(context.Background(), "org/repo", Options{Endpoint: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	cfg, big, tok := gitOID(h.files["config.json"]), sha256hex(h.files["model.safetensors"]), gitOID(h.files["tokenizer.json"])
	want := []string{
		"models--org--repo/",
		"models--org--repo/blobs/",
		"models--org--repo/blobs/" + big,
		"models--org--repo/blobs/" + cfg,
		"models--org--repo/blobs/" + tok,
		"models--org--repo/refs/",
		"models--org--repo/refs/main",
		"models--org--repo/snapshots/",
		"models--org--repo/snapshots/" + fakeCommit + "/",
		"models--org--repo/snapshots/" + fakeCommit + "/config.json -> ../../blobs/" + cfg,
		"models--org--repo/snapshots/" + fakeCommit + "/model.safetensors -> ../../blobs/" + big,
		"models--org--repo/snapshots/" + fakeCommit + "/tokenizer.json -> ../../blobs/" + tok,
	}
	sort.Strings(want)
	if got := walkCache(t, c.Dir); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("cache tree:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if b, _ := os.ReadFile(filepath.Join(c.RepoDir("org/repo"), "refs", "main")); string(b) != fakeCommit {
		t.Fatalf("refs/main = %q", b)
	}
	if res.Dir != filepath.Join(c.RepoDir("org/repo"), "snapshots", fakeCommit) || len(res.Downloaded) != 3 {
		t.Fatalf("%+v", res)
	}
	if got, _ := os.ReadFile(filepath.Join(res.Dir, "model.safetensors")); string(got) != string(h.files["model.safetensors"]) {
		t.Fatal("content differs")
	}
	if h.cdnHits.Load() != 1 {
		t.Fatalf("LFS file fetched %d times from the CDN path, want 1", h.cdnHits.Load())
	}
	res, err = c.Download(context.Background(), "org/repo", Options{Endpoint: srv.URL})
	if err != nil || len(res.Skipped) != 3 {
		t.Fatalf("second pull: %+v %v", res, err)
	}
}

// TestCacheResumeAndChecksum: a cut download resumes from blobs/ETAG.incomplete with a Range request through the
// redirect; a file whose hash disagrees with the listing is refused and nothing is linked.
func TestCacheResumeAndChecksum(t *testing.T) {
	h, srv := newHub(t)
	h.cutOnce.Store("model.safetensors")
	c := Cache{Dir: t.TempDir()}
	if _, err := c.Download(context.Background(), "org/repo", Options{Endpoint: srv.URL}); err == nil {
		t.Fatal("cut connection not reported")
	}
	if _, ok := c.Snapshot("org/repo", ""); ok {
		t.Fatal("refs/main written before every file was in place")
	}
	blob := filepath.Join(c.RepoDir("org/repo"), "blobs", sha256hex(h.files["model.safetensors"]))
	if st, err := os.Stat(blob + ".incomplete"); err != nil || st.Size() == 0 {
		t.Fatalf("no partial blob kept: %v", err)
	}
	if _, err := os.Stat(filepath.Join(c.RepoDir("org/repo"), "snapshots", fakeCommit, "model.safetensors")); err == nil {
		t.Fatal("a snapshot link points at an incomplete blob")
	}
	if _, err := c.Download(context.Background(), "org/repo", Options{Endpoint: srv.URL}); err != nil {
		t.Fatal(err)
	}
	if h.rangeHits.Load() == 0 {
		t.Fatal("second run did not resume with a Range request")
	}
	if got, _ := os.ReadFile(blob); string(got) != string(h.files["model.safetensors"]) {
		t.Fatal("resumed blob differs")
	}

	h2, srv2 := newHub(t)
	h2.badSHA = "model.safetensors"
	c2 := Cache{Dir: t.TempDir()}
	if _, err := c2.Download(context.Background(), "org/repo", Options{Endpoint: srv2.URL}); err == nil {
		t.Fatal("hash disagreement not reported")
	}
	if _, err := os.Stat(filepath.Join(c2.RepoDir("org/repo"), "snapshots", fakeCommit, "model.safetensors")); err == nil {
		t.Fatal("a file with the wrong hash was linked")
	}
}

// offlineHub fails the test on any request: the resolver must not touch the network.
func offlineHub(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("network used: %s %s", r.Method, r.URL)
		http.Error(w, "offline", http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestReadHuggingFaceHubTree builds a cache the way huggingface_hub does (blobs by ETag, relative links from
// nested snapshot paths, refs for a branch and a tag, a second snapshot) and resolves ids from it with no network.
func TestReadHuggingFaceHubTree(t *testing.T) {
	root := t.TempDir()
	repo := filepath.Join(root, "models--acme--tiny-lora")
	commitA, commitB := strings.Repeat("a", 40), strings.Repeat("b", 40)
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(snapshot, file, etag string) {
		t.Helper()
		dst := filepath.Join(repo, "snapshots", snapshot, filepath.FromSlash(file))
		os.MkdirAll(filepath.Dir(dst), 0o755)
		rel, _ := filepath.Rel(filepath.Dir(dst), filepath.Join(repo, "blobs", etag))
		if err := os.Symlink(rel, dst); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(repo, "blobs", "e1"), `{"r":8}`)
	write(filepath.Join(repo, "blobs", "e2"), `{"r":16}`)
	write(filepath.Join(repo, "blobs", "e3"), "nested")
	link(commitA, "adapter_config.json", "e1")
	link(commitB, "adapter_config.json", "e2")
	link(commitB, "sub/dir/file.txt", "e3")
	write(filepath.Join(repo, "refs", "main"), commitB)
	write(filepath.Join(repo, "refs", "v1"), commitA+"\n")
	o := ResolveOptions{Options: Options{Endpoint: offlineHub(t)}, Cache: Cache{Dir: root}}
	for _, c := range []struct{ ref, want, commit string }{
		{"acme/tiny-lora", `{"r":16}`, commitB},
		{"acme/tiny-lora@main", `{"r":16}`, commitB},
		{"acme/tiny-lora@v1", `{"r":8}`, commitA},
		{"acme/tiny-lora@" + commitA, `{"r":8}`, commitA},
	} {
		r, err := Resolve(context.Background(), c.ref, o)
		if err != nil {
			t.Fatalf("%s: %v", c.ref, err)
		}
		if filepath.Base(r.Dir) != c.commit || r.Ref == nil || r.Ref.Repo != "acme/tiny-lora" {
			t.Fatalf("%s: %+v", c.ref, r)
		}
		if b, err := os.ReadFile(filepath.Join(r.Dir, "adapter_config.json")); err != nil || string(b) != c.want {
			t.Fatalf("%s: %q %v", c.ref, b, err)
		}
	}
	r, _ := Resolve(context.Background(), "acme/tiny-lora", o)
	if b, err := os.ReadFile(filepath.Join(r.Dir, "sub", "dir", "file.txt")); err != nil || string(b) != "nested" {
		t.Fatalf("nested link: %q %v", b, err)
	}
	o.Offline = true
	if _, err := Resolve(context.Background(), "acme/other", o); !errors.Is(err, ErrNotCached) {
		t.Fatalf("missing repo offline: %v", err)
	}
	if _, err := Resolve(context.Background(), "acme/tiny-lora@v2", o); !errors.Is(err, ErrNotCached) {
		t.Fatalf("missing revision offline: %v", err)
	}
	local := t.TempDir()
	if r, err := Resolve(context.Background(), local, o); err != nil || r.Dir != local || r.Ref != nil {
		t.Fatalf("a local folder: %+v %v", r, err)
	}
}

// TestResolveDownloads: a hub id missing from the cache is downloaded once, then served from the cache.
func TestResolveDownloads(t *testing.T) {
	h, srv := newHub(t)
	o := ResolveOptions{Options: Options{Endpoint: srv.URL}, Cache: Cache{Dir: t.TempDir()}}
	r, err := Resolve(context.Background(), "org/repo", o)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(r.Dir, "config.json")); string(b) != string(h.files["config.json"]) {
		t.Fatalf("config.json: %q", b)
	}
	o.Endpoint = offlineHub(t)
	if r2, err := Resolve(context.Background(), "org/repo", o); err != nil || r2.Dir != r.Dir {
		t.Fatalf("second resolve: %+v %v", r2, err)
	}
}

func TestParseRef(t *testing.T) {
	for s, want := range map[string]string{
		"HuggingFaceTB/SmolLM2-135M-Instruct": "HuggingFaceTB/SmolLM2-135M-Instruct|",
		"org/name@v1.0":                       "org/name|v1.0",
		"org/name@refs/pr/1":                  "org/name|refs/pr/1",
		"./org/name":                          "",
		"/abs/path":                           "",
		"a/b/c":                               "",
		"s3://bucket/prefix":                  "",
		"name":                                "",
		"org/..":                              "",
		"org/name@":                           "",
	} {
		r, ok := ParseRef(s)
		got := ""
		if ok {
			got = r.Repo + "|" + r.Revision
		}
		if got != want {
			t.Errorf("ParseRef(%q) = %q, want %q", s, got, want)
		}
	}
}
