package adapterstore

import (
	"context"
	"io"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// S3 is a Bucket on Amazon S3 or any S3-compatible store. The caller builds the client (region, credentials,
// endpoint, path-style addressing), so this package reads no environment.
type S3 struct {
	Client *s3.Client
}

// List implements Bucket with ListObjectsV2, following continuation tokens.
func (b S3) List(ctx context.Context, bucket, prefix string) ([]Object, error) {
	var out []Object
	p := s3.NewListObjectsV2Paginator(b.Client, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, o := range page.Contents {
			out = append(out, Object{Key: aws.ToString(o.Key), Size: aws.ToInt64(o.Size), ETag: unquote(aws.ToString(o.ETag))})
		}
	}
	return out, nil
}

// Get implements Bucket with GetObject.
func (b S3) Get(ctx context.Context, bucket, key string) (io.ReadCloser, string, error) {
	r, err := b.Client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return nil, "", err
	}
	return r.Body, unquote(aws.ToString(r.ETag)), nil
}

func unquote(etag string) string { return strings.Trim(etag, `"`) }
