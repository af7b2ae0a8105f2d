package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/lorakit/lorakit/internal/testenv"
	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/serve"
	"github.com/lorakit/lorakit/serve/backend"
)

// TestS3EndToEnd runs the S3 adapter store against s3rver, a separate S3-compatible server process (npm; .ci
// installs it and sets LORAKIT_S3RVER), configured only through the standard AWS variables: two adapters trained
// on stories260K are uploaded and served by name, 50 concurrent first requests cause one download, the cache
// evicts by bytes, and an adapter whose safetensors object was uploaded truncated is refused.
func TestS3EndToEnd(t *testing.T) {
	bin := os.Getenv("LORAKIT_S3RVER")
	if bin == "" {
		t.Skip("LORAKIT_S3RVER not set (npm s3rver; .ci/install/35-s3rver.sh installs it)")
	}
	sh := testenv.Testdata(t)
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin, "-d", filepath.Join(dir, "s3"), "-a", "127.0.0.1", "-p", fmt.Sprint(port), "-s", "--configure-bucket", "loras")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	endpoint := fmt.Sprintf("http://127.0.0.1:%d", port)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("s3rver did not start")
		}
	}
	t.Setenv("AWS_ENDPOINT_URL_S3", endpoint)
	t.Setenv("AWS_ACCESS_KEY_ID", "S3RVER") // s3rver's built-in credentials
	t.Setenv("AWS_SECRET_ACCESS_KEY", "S3RVER")
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "none"))
	ctx := context.Background()
	cl, err := newS3Client(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// Two adapters trained on stories260K, uploaded as PEFT folders.
	model := filepath.Join(sh, "models", "stories260K")
	var lines []string
	for i := 0; i < 8; i++ {
		lines = append(lines, fmt.Sprintf(`{"prompt":"Once upon a time %d","response":"there was a cat %d"}`, i, i))
	}
	data := filepath.Join(dir, "data.jsonl")
	os.WriteFile(data, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	upload := func(local, name string, truncate bool) int64 {
		var total int64
		for _, f := range []string{"adapter_config.json", "adapter_model.safetensors"} {
			b, err := os.ReadFile(filepath.Join(local, f))
			if err != nil {
				t.Fatal(err)
			}
			if truncate && strings.HasSuffix(f, ".safetensors") {
				b = b[:len(b)-100]
			}
			total += int64(len(b))
			if _, err := cl.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("loras"), Key: aws.String("adapters/" + name + "/" + f),
				Body: bytes.NewReader(b)}); err != nil {
				t.Fatalf("upload %s/%s: %v", name, f, err)
			}
		}
		return total
	}
	var size int64
	for i, name := range []string{"cats", "dogs"} {
		out := filepath.Join(dir, name)
		run(t, "train", "--model", model, "--data", data, "--out", out, "--rank", "4", "--alpha", "8",
			"--max-steps", "2", "--batch-size", "4", "--threads", "1", "--seed", fmt.Sprint(i+1))
		size = upload(out, name, false)
		if name == "cats" {
			upload(out, "broken", true)
		}
	}

	store, err := openAdapterStore(ctx, filepath.Join(dir, "cache"), fmt.Sprint(size*3/2)) // one adapter fits, two do not
	if err != nil {
		t.Fatal(err)
	}
	m, err := models.Load(model, models.LoadOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	srv, err := serve.New(serve.Config{Model: backend.FromModel(m), ModelName: "stories", AdapterStore: store,
		AdapterURL: "s3://loras/adapters", MaxBatch: 8})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	defer srv.Shutdown(ctx)
	complete := func(model string) (int, string) {
		body := fmt.Sprintf(`{"model":%q,"prompt":"Once upon a time","max_tokens":4,"temperature":0}`, model)
		resp, err := http.Post(ts.URL+"/v1/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Error(err)
			return 0, ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if st, b := complete("cats"); st != 200 {
				t.Errorf("cats: %d %s", st, b)
			}
		}()
	}
	wg.Wait()
	if st := store.Stats(); st.Downloads != 1 || st.Adapters != 1 {
		t.Fatalf("50 concurrent first requests: %+v, want one download", st)
	}
	srv.Registry().Unload(ctx, "cats") // out of memory: the next use reads the cache, not S3
	if st, b := complete("dogs"); st != 200 {
		t.Fatalf("dogs: %d %s", st, b)
	}
	if st := store.Stats(); st.Downloads != 2 || st.Evicts != 1 || st.Bytes > size*3/2 {
		t.Fatalf("after a second adapter past the byte bound: %+v", st)
	}
	if st, b := complete("broken"); st != 400 || !strings.Contains(b, "could not be loaded") {
		t.Fatalf("truncated adapter: %d %s", st, b)
	}
	if st, b := complete("absent"); st != 404 {
		t.Fatalf("absent adapter: %d %s", st, b)
	}
}
