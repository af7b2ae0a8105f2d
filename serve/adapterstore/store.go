// Package adapterstore keeps adapters that live in object storage (s3://BUCKET/PREFIX/NAME/ holding a PEFT
// folder) in a local cache bounded by bytes. An adapter is downloaded once however many requests ask for it at
// the same moment, each file is checked against the size and ETag the store listed (and its MD5 when the ETag
// is one), the folder is published by one rename only when every file is correct, and the least recently used
// folders are removed when the cache grows past its size. A partial or corrupt download is never served.
package adapterstore

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// ErrNotFound is returned when no object lies under an adapter's prefix.
var ErrNotFound = errors.New("no adapter at this location")

// Object is one stored object as a listing gives it.
type Object struct {
	Key  string
	Size int64
	ETag string // without quotes
}

// Bucket is the object store (S3 implements it).
type Bucket interface {
	// List returns every object under prefix (recursively).
	List(ctx context.Context, bucket, prefix string) ([]Object, error)
	// Get opens an object; etag is the ETag of what is being read.
	Get(ctx context.Context, bucket, key string) (body io.ReadCloser, etag string, err error)
}

// Config configures a Store.
type Config struct {
	Bucket Bucket
	// Dir is the local cache folder (created if missing; a non-empty folder must be a lorakit adapter cache).
	Dir string
	// MaxBytes bounds the cache; least recently used adapters beyond it are removed (0 = unbounded).
	MaxBytes int64
}

// Stats counts what the cache did.
type Stats struct {
	Bytes                           int64 // on disk now
	Adapters                        int   // folders on disk now
	Hits, Downloads, Failed, Evicts uint64
}

// Store is a bounded local cache of remote adapters. It is safe for concurrent use.
type Store struct {
	cfg    Config
	flight singleflight.Group
	mu     sync.Mutex
	byDir  map[string]*entry // key: path under Dir ("ID/VERSION")
	total  int64
	stats  Stats
}

type entry struct {
	rel     string
	bytes   int64
	lastUse time.Time
	pins    int
}

// marker marks a folder as a lorakit adapter cache, so that only such a folder is ever cleaned.
const marker = ".lorakit-adapter-cache"

// Open opens (or creates) the cache folder and indexes what an earlier run left in it.
func Open(cfg Config) (*Store, error) {
	if cfg.Bucket == nil || cfg.Dir == "" {
		return nil, errors.New("adapterstore: Bucket and Dir are required")
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("adapter cache %s: %w", cfg.Dir, err)
	}
	ents, err := os.ReadDir(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("adapter cache %s: %w", cfg.Dir, err)
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, marker)); err != nil {
		if len(ents) > 0 {
			return nil, fmt.Errorf("adapter cache %s is not empty and was not made by lorakit (no %s): choose an empty or new folder", cfg.Dir, marker)
		}
		if err := os.WriteFile(filepath.Join(cfg.Dir, marker), []byte("lorakit adapter cache: folders here are removed when the cache is full\n"), 0o644); err != nil {
			return nil, fmt.Errorf("adapter cache %s: %w", cfg.Dir, err)
		}
	}
	s := &Store{cfg: cfg, byDir: map[string]*entry{}}
	_ = os.RemoveAll(filepath.Join(cfg.Dir, ".tmp")) // downloads an earlier run left unfinished
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		vers, _ := os.ReadDir(filepath.Join(cfg.Dir, e.Name()))
		for _, v := range vers {
			rel := filepath.Join(e.Name(), v.Name())
			n, mtime := folderSize(filepath.Join(cfg.Dir, rel))
			s.byDir[rel] = &entry{rel: rel, bytes: n, lastUse: mtime}
			s.total += n
		}
	}
	s.mu.Lock()
	s.evict("")
	s.mu.Unlock()
	return s, nil
}

func folderSize(dir string) (int64, time.Time) {
	var n int64
	var mtime time.Time
	if st, err := os.Stat(dir); err == nil {
		mtime = st.ModTime()
	}
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n, mtime
}

// ParseURL splits s3://BUCKET/KEY into its bucket and key.
func ParseURL(u string) (bucket, key string, err error) {
	rest, ok := strings.CutPrefix(u, "s3://")
	if !ok {
		return "", "", fmt.Errorf("%q is not an s3://BUCKET/PREFIX URL", u)
	}
	bucket, key, _ = strings.Cut(rest, "/")
	if bucket == "" {
		return "", "", fmt.Errorf("%q names no bucket", u)
	}
	return bucket, strings.Trim(key, "/"), nil
}

var safeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// Fetch makes the adapter folder at url (s3://BUCKET/PREFIX/NAME) available locally and returns its path. The
// folder stays on disk until release is called (eviction skips it), long enough for the caller to load it.
func (s *Store) Fetch(ctx context.Context, url string) (dir string, release func(), err error) {
	bucket, prefix, err := ParseURL(url)
	if err != nil {
		return "", nil, err
	}
	objs, err := s.cfg.Bucket.List(ctx, bucket, prefix+"/")
	if err != nil {
		return "", nil, fmt.Errorf("list %s: %w", url, err)
	}
	if len(objs) == 0 {
		return "", nil, fmt.Errorf("%w: %s", ErrNotFound, url)
	}
	sort.Slice(objs, func(i, j int) bool { return objs[i].Key < objs[j].Key })
	// One folder per location, one version per listing: a changed object gives a new version.
	id := sha256.Sum256([]byte(url))
	ver := sha256.New()
	for _, o := range objs {
		fmt.Fprintf(ver, "%s\x00%d\x00%s\x00", o.Key, o.Size, o.ETag)
	}
	base := safeName.ReplaceAllString(path.Base(prefix), "_")
	rel := filepath.Join(hex.EncodeToString(id[:6])+"-"+base, hex.EncodeToString(ver.Sum(nil)[:8]))
	for attempt := 0; ; attempt++ {
		_, err, _ := s.flight.Do(rel, func() (any, error) {
			if s.has(rel) {
				s.count(func(st *Stats) { st.Hits++ })
				return nil, nil
			}
			n, err := s.download(ctx, bucket, prefix, objs, rel)
			if err != nil {
				s.count(func(st *Stats) { st.Failed++ })
				return nil, err
			}
			s.add(rel, n)
			return nil, nil
		})
		if err != nil {
			return "", nil, fmt.Errorf("fetch %s: %w", url, err)
		}
		if s.pin(rel) {
			break
		}
		if attempt == 2 { // evicted again before we could pin it: the cache is too small for the load
			return "", nil, fmt.Errorf("fetch %s: evicted before use three times; raise --adapter-cache-size", url)
		}
	}
	var once sync.Once
	return filepath.Join(s.cfg.Dir, rel), func() { once.Do(func() { s.unpin(rel) }) }, nil
}

func (s *Store) has(rel string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byDir[rel] != nil
}

func (s *Store) count(f func(*Stats)) {
	s.mu.Lock()
	f(&s.stats)
	s.mu.Unlock()
}

// pin marks rel in use and fresh; false if it is not in the cache.
func (s *Store) pin(rel string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.byDir[rel]
	if e == nil {
		return false
	}
	e.pins++
	e.lastUse = time.Now()
	return true
}

func (s *Store) unpin(rel string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.byDir[rel]; e != nil && e.pins > 0 {
		e.pins--
	}
	s.evict("")
}

// add indexes a freshly published folder (unpinned) and evicts beyond the size bound, never rel itself.
func (s *Store) add(rel string, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byDir[rel] = &entry{rel: rel, bytes: n, lastUse: time.Now()}
	s.total += n
	s.stats.Downloads++
	s.evict(rel)
}

// evict removes least recently used unpinned folders while the cache is over its bound. s.mu held.
func (s *Store) evict(keep string) {
	if s.cfg.MaxBytes <= 0 {
		return
	}
	for s.total > s.cfg.MaxBytes {
		var lru *entry
		for _, e := range s.byDir {
			if e.pins == 0 && e.rel != keep && (lru == nil || e.lastUse.Before(lru.lastUse)) {
				lru = e
			}
		}
		if lru == nil {
			return
		}
		delete(s.byDir, lru.rel)
		s.total -= lru.bytes
		s.stats.Evicts++
		_ = os.RemoveAll(filepath.Join(s.cfg.Dir, lru.rel))
		_ = os.Remove(filepath.Dir(filepath.Join(s.cfg.Dir, lru.rel))) // the location folder, once empty
	}
}

// Stats reports the cache's size and counts.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Bytes, st.Adapters = s.total, len(s.byDir)
	return st
}

// download writes every object into a temporary folder, checks each, and renames the folder to rel.
func (s *Store) download(ctx context.Context, bucket, prefix string, objs []Object, rel string) (int64, error) {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(s.cfg.Dir, ".tmp", hex.EncodeToString(rnd[:]))
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return 0, err
	}
	defer os.RemoveAll(tmp) // gone after the rename; only a failed download leaves it to remove
	var total int64
	hasConfig := false
	for _, o := range objs {
		name := strings.TrimPrefix(o.Key, prefix+"/")
		if name == "" || strings.HasSuffix(name, "/") {
			continue // a folder marker object
		}
		if strings.Contains(name, "..") || path.IsAbs(name) {
			return 0, fmt.Errorf("refusing object key %q", o.Key)
		}
		hasConfig = hasConfig || name == "adapter_config.json"
		dst := filepath.Join(tmp, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return 0, err
		}
		if err := s.getObject(ctx, bucket, o, dst); err != nil {
			return 0, fmt.Errorf("%s: %w", o.Key, err)
		}
		total += o.Size
	}
	if !hasConfig {
		return 0, fmt.Errorf("%w: s3://%s/%s/ holds no adapter_config.json", ErrNotFound, bucket, prefix)
	}
	dst := filepath.Join(s.cfg.Dir, rel)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return 0, err
	}
	if err := os.Rename(tmp, dst); err != nil {
		if _, serr := os.Stat(dst); serr == nil {
			return total, nil // another process published the same version
		}
		return 0, err
	}
	return total, nil
}

// getObject downloads one object and checks its size, that its ETag is the listed one, and its MD5 when the
// ETag is a plain MD5 (a single-part upload).
func (s *Store) getObject(ctx context.Context, bucket string, o Object, dst string) error {
	body, etag, err := s.cfg.Bucket.Get(ctx, bucket, o.Key)
	if err != nil {
		return err
	}
	defer body.Close()
	if etag != "" && o.ETag != "" && etag != o.ETag {
		return fmt.Errorf("changed while downloading (ETag %s, listed %s)", etag, o.ETag)
	}
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	var h hash.Hash
	w := io.Writer(f)
	if isMD5(o.ETag) {
		h = md5.New()
		w = io.MultiWriter(f, h)
	}
	n, err := io.Copy(w, io.LimitReader(body, o.Size+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("after %d of %d bytes: %w", n, o.Size, err)
	}
	if n != o.Size {
		return fmt.Errorf("got %d bytes, the store lists %d", n, o.Size)
	}
	if h != nil {
		if got := hex.EncodeToString(h.Sum(nil)); got != o.ETag {
			return fmt.Errorf("MD5 %s does not match the ETag %s", got, o.ETag)
		}
	}
	return nil
}

var md5RE = regexp.MustCompile(`^[0-9a-f]{32}$`)

func isMD5(etag string) bool { return md5RE.MatchString(etag) }
