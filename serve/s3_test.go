package serve

import (
	"bytes"
	"context"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/lorakit/lorakit/serve/adapterstore"
)

// TestAdaptersFromS3: with --adapter-dir s3://..., a request names an adapter kept in an S3-compatible store
// (gofakes3, in process); 50 concurrent first requests download it once; lora_path takes s3:// URLs under the
// adapter prefix and refuses others.
func TestAdaptersFromS3(t *testing.T) {
	ts := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
	t.Cleanup(ts.Close)
	cl := s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(ts.URL), UsePathStyle: true,
		Credentials:                credentials.NewStaticCredentialsProvider("key", "secret", ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired})
	ctx := context.Background()
	if _, err := cl.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("loras")}); err != nil {
		t.Fatal(err)
	}
	for key, body := range map[string]string{
		"team/remote/adapter_config.json": `{"peft_type":"LORA"}`,
		"team/remote/script.txt":          "remote output",
		"other/x/adapter_config.json":     `{"peft_type":"LORA"}`,
	} {
		if _, err := cl.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("loras"), Key: aws.String(key), Body: bytes.NewReader([]byte(body))}); err != nil {
			t.Fatal(err)
		}
	}
	var store *adapterstore.Store
	e := newEnv(t, func(c *Config, _ *fakeModel) {
		var err error
		store, err = adapterstore.Open(adapterstore.Config{Bucket: adapterstore.S3{Client: cl}, Dir: filepath.Join(t.TempDir(), "cache"), MaxBytes: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		c.AdapterDir, c.AdapterStore, c.AdapterURL = "", store, "s3://loras/team"
	})
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, b := e.post(t, "/v1/chat/completions", chatBody("remote", "x", ""))
			if st != 200 || !bytes.Contains(b, []byte("output")) { // the fake adapter's script
				t.Errorf("%d %s", st, b)
			}
		}()
	}
	wg.Wait()
	if st := store.Stats(); st.Downloads != 1 {
		t.Fatalf("50 concurrent first requests: %+v, want one download", st)
	}
	if v := value(t, scrapeFamilies(t, e), "lorakit_adapter_cache_downloads_total"); v != 1 {
		t.Fatalf("lorakit_adapter_cache_downloads_total %v", v)
	}
	if st, b := e.post(t, "/v1/chat/completions", chatBody("absent", "x", "")); st != 404 {
		t.Fatalf("absent adapter: %d %s", st, b)
	}
	if st, b := e.post(t, "/v1/load_lora_adapter", `{"lora_name":"again","lora_path":"s3://loras/team/remote"}`); st != 200 {
		t.Fatalf("lora_path under the adapter prefix: %d %s", st, b)
	}
	if st, b := e.post(t, "/v1/load_lora_adapter", `{"lora_name":"x","lora_path":"s3://loras/other/x"}`); st != 400 {
		t.Fatalf("lora_path outside the adapter prefix: %d %s", st, b)
	}
}
