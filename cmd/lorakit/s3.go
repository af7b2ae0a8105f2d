package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/lorakit/lorakit/serve/adapterstore"
)

// newS3Client builds an S3 client the way the AWS CLI configures itself: region, credentials and profile from
// the standard AWS_* variables and ~/.aws files (and web identity / instance roles in a cluster), endpoint from
// AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL. A custom endpoint (MinIO, Ceph, s3rver, ...) gets path-style
// addressing, which such stores expect; so does AWS_S3_FORCE_PATH_STYLE=true.
func newS3Client(ctx context.Context) (*s3.Client, error) {
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("AWS configuration: %w", err)
	}
	custom := os.Getenv("AWS_ENDPOINT_URL_S3") != "" || os.Getenv("AWS_ENDPOINT_URL") != ""
	if cfg.Region == "" {
		cfg.Region = "us-east-1" // S3-compatible stores ignore it; S3 itself redirects to the bucket's region
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.UsePathStyle = custom || envTrue("AWS_S3_FORCE_PATH_STYLE")
		// Only the checksums S3 requires: S3-compatible stores do not all know the newer trailing checksums.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	}), nil
}

// openAdapterStore opens the local cache of adapters from S3.
func openAdapterStore(ctx context.Context, dir, size string) (*adapterstore.Store, error) {
	n, err := parseSize(size)
	if err != nil {
		return nil, fmt.Errorf("--adapter-cache-size: %w", err)
	}
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return nil, fmt.Errorf("--adapter-cache: no user cache folder (%v); name one", err)
		}
		dir = filepath.Join(base, "lorakit", "adapters")
	}
	cl, err := newS3Client(ctx)
	if err != nil {
		return nil, err
	}
	return adapterstore.Open(adapterstore.Config{Bucket: adapterstore.S3{Client: cl}, Dir: dir, MaxBytes: n})
}
