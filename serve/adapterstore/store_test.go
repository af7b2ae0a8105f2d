package adapterstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// fakeS3 is gofakes3 in process, behind a handler that counts object GETs and can cut or corrupt one.
type fakeS3 struct {
	client  *s3.Client
	gets    atomic.Int32
	mu      sync.Mutex
	cut     string // key whose next GET body is cut halfway
	corrupt string // key whose next GET body has one byte flipped
}

func newFakeS3(t *testing.T) *fakeS3 {
	t.Helper()
	f := &fakeS3{}
	faker := gofakes3.New(s3mem.New())
	inner := faker.Server()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Query().Get("list-type") == "" && strings.Count(strings.Trim(r.URL.Path, "/"), "/") >= 1 {
			f.gets.Add(1)
			key := strings.SplitN(strings.Trim(r.URL.Path, "/"), "/", 2)[1]
			f.mu.Lock()
			cut, corrupt := f.cut == key, f.corrupt == key
			if cut {
				f.cut = ""
			}
			if corrupt {
				f.corrupt = ""
			}
			f.mu.Unlock()
			if cut || corrupt {
				rec := httptest.NewRecorder()
				inner.ServeHTTP(rec, r)
				for k, v := range rec.Header() {
					w.Header()[k] = v
				}
				body := rec.Body.Bytes()
				w.WriteHeader(rec.Code)
				if cut {
					w.Write(body[:len(body)/2])
					panic(http.ErrAbortHandler) // the connection drops mid-body
				}
				body[len(body)/2] ^= 0xff
				w.Write(body)
				return
			}
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f.client = s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL), UsePathStyle: true,
		Credentials:                credentials.NewStaticCredentialsProvider("key", "secret", ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired})
	if _, err := f.client.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String("bkt")}); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fakeS3) put(t *testing.T, key string, b []byte) {
	t.Helper()
	if _, err := f.client.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String("bkt"), Key: aws.String(key),
		Body: bytes.NewReader(b)}); err != nil {
		t.Fatal(err)
	}
}

// putAdapter uploads a two-file adapter of about n bytes under adapters/NAME/.
func (f *fakeS3) putAdapter(t *testing.T, name string, n int) {
	f.put(t, "adapters/"+name+"/adapter_config.json", []byte(`{"peft_type":"LORA","r":2}`))
	w := bytes.Repeat([]byte(name), n/len(name))
	f.put(t, "adapters/"+name+"/adapter_model.safetensors", w)
}

func open(t *testing.T, f *fakeS3, dir string, max int64) *Store {
	t.Helper()
	s, err := Open(Config{Bucket: S3{Client: f.client}, Dir: dir, MaxBytes: max})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestFetchOnceUnderConcurrency: 50 callers asking for the same adapter at once cause one download of each file.
func TestFetchOnceUnderConcurrency(t *testing.T) {
	f := newFakeS3(t)
	f.putAdapter(t, "a1", 100_000)
	s := open(t, f, t.TempDir(), 0)
	var wg sync.WaitGroup
	dirs := make([]string, 50)
	errs := make([]error, 50)
	for i := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var rel func()
			dirs[i], rel, errs[i] = s.Fetch(context.Background(), "s3://bkt/adapters/a1")
			if rel != nil {
				defer rel()
			}
		}()
	}
	wg.Wait()
	for i := range dirs {
		if errs[i] != nil || dirs[i] != dirs[0] {
			t.Fatalf("caller %d: %q %v (first: %q)", i, dirs[i], errs[i], dirs[0])
		}
	}
	if g := f.gets.Load(); g != 2 {
		t.Fatalf("%d object GETs for 50 concurrent first requests of a 2-file adapter, want 2", g)
	}
	if st := s.Stats(); st.Downloads != 1 {
		t.Fatalf("%+v", st)
	}
	b, err := os.ReadFile(filepath.Join(dirs[0], "adapter_model.safetensors"))
	if err != nil || len(b) != 100_000 {
		t.Fatalf("%d bytes, %v", len(b), err)
	}
	if _, rel, err := s.Fetch(context.Background(), "s3://bkt/adapters/a1"); err != nil || f.gets.Load() != 2 {
		t.Fatalf("a cached adapter was fetched again: %v, %d GETs", err, f.gets.Load())
	} else {
		rel()
	}
	if _, _, err := s.Fetch(context.Background(), "s3://bkt/adapters/none"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing adapter: %v", err)
	}
}

// TestEvictionByBytes: past the size bound the least recently used folder goes, never one in use.
func TestEvictionByBytes(t *testing.T) {
	f := newFakeS3(t)
	for _, n := range []string{"a1", "a2", "a3"} {
		f.putAdapter(t, n, 40_000)
	}
	dir := t.TempDir()
	s := open(t, f, dir, 100_000) // two adapters fit, three do not
	fetch := func(name string) (string, func()) {
		d, rel, err := s.Fetch(context.Background(), "s3://bkt/adapters/"+name)
		if err != nil {
			t.Fatal(err)
		}
		return d, rel
	}
	d1, r1 := fetch("a1")
	r1()
	d2, r2 := fetch("a2")
	r2()
	_, r1 = fetch("a1") // a1 is now more recent than a2
	r1()
	d3, r3 := fetch("a3")
	for _, c := range []struct {
		dir  string
		want bool
	}{{d1, true}, {d2, false}, {d3, true}} {
		if _, err := os.Stat(c.dir); (err == nil) != c.want {
			t.Fatalf("%s present=%v, want %v", c.dir, err == nil, c.want)
		}
	}
	if st := s.Stats(); st.Evicts != 1 || st.Bytes > 100_000 || st.Adapters != 2 {
		t.Fatalf("%+v", st)
	}
	// a3 is pinned: a bound smaller than it evicts everything else but keeps it until it is released.
	s.cfg.MaxBytes = 1
	_, r1 = fetch("a1")
	r1()
	if _, err := os.Stat(d3); err != nil {
		t.Fatal("an adapter in use was evicted")
	}
	r3()
	if _, err := os.Stat(d3); err == nil {
		t.Fatal("released adapter over the bound kept")
	}
	// A new Store over the same folder indexes what is there.
	s.cfg.MaxBytes = 0
	fetch("a2")
	s2 := open(t, f, dir, 0)
	if st := s2.Stats(); st.Adapters != 1 || st.Bytes == 0 {
		t.Fatalf("reopened: %+v", st)
	}
}

// TestPartialOrCorruptNeverServed: a cut transfer and a flipped byte are refused, nothing is published, and the
// next fetch downloads a correct copy.
func TestPartialOrCorruptNeverServed(t *testing.T) {
	f := newFakeS3(t)
	f.putAdapter(t, "a1", 50_000)
	dir := t.TempDir()
	s := open(t, f, dir, 0)
	for _, mode := range []string{"cut", "corrupt"} {
		f.mu.Lock()
		if mode == "cut" {
			f.cut = "adapters/a1/adapter_model.safetensors"
		} else {
			f.corrupt = "adapters/a1/adapter_model.safetensors"
		}
		f.mu.Unlock()
		if _, _, err := s.Fetch(context.Background(), "s3://bkt/adapters/a1"); err == nil {
			t.Fatalf("%s transfer served", mode)
		} else if mode == "corrupt" && !strings.Contains(err.Error(), "MD5") {
			t.Fatalf("corrupt transfer: %v", err)
		}
		if st := s.Stats(); st.Adapters != 0 {
			t.Fatalf("%s transfer published: %+v", mode, st)
		}
	}
	d, rel, err := s.Fetch(context.Background(), "s3://bkt/adapters/a1")
	if err != nil {
		t.Fatal(err)
	}
	defer rel()
	b, _ := os.ReadFile(filepath.Join(d, "adapter_model.safetensors"))
	want := bytes.Repeat([]byte("a1"), 25_000)
	sum, wsum := md5.Sum(b), md5.Sum(want)
	if hex.EncodeToString(sum[:]) != hex.EncodeToString(wsum[:]) {
		t.Fatal("served copy differs")
	}
	ents, _ := os.ReadDir(filepath.Join(dir, ".tmp"))
	if len(ents) != 0 {
		t.Fatalf("temporaries left: %v", ents)
	}
}

func TestOpenRefusesForeignFolder(t *testing.T) {
	f := newFakeS3(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o644)
	if _, err := Open(Config{Bucket: S3{Client: f.client}, Dir: dir}); err == nil {
		t.Fatal("a non-empty folder not made by lorakit was taken as the cache")
	}
}
