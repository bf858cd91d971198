package export

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// ErrNoObject is what a Store's Open returns for a key it does not hold.
var ErrNoObject = errors.New("export: no such object")

// Store is where export files live. Keys are "<export id>/<file name>".
type Store interface {
	// Put stores size bytes of r under key, replacing what was there.
	Put(ctx context.Context, key string, r io.Reader, size int64) error
	// Open streams the object at key; ErrNoObject when there is none.
	Open(ctx context.Context, key string) (io.ReadCloser, int64, error)
	// Delete removes the objects at keys; a missing one is no error.
	Delete(ctx context.Context, keys ...string) error
}

// LocalStore keeps files under a directory of the local disk (development,
// or one host). A Put writes a temporary file and renames it, so a reader
// never sees half a file.
type LocalStore struct{ Dir string }

func (s LocalStore) path(key string) (string, error) {
	if key == "" || strings.Contains(key, "..") || strings.HasPrefix(key, "/") {
		return "", fmt.Errorf("export: bad key %q", key)
	}
	return filepath.Join(s.Dir, filepath.FromSlash(key)), nil
}

func (s LocalStore) Put(_ context.Context, key string, r io.Reader, _ int64) error {
	p, err := s.path(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".put-*")
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return err
	}
	return os.Rename(f.Name(), p)
}

func (s LocalStore) Open(_ context.Context, key string) (io.ReadCloser, int64, error) {
	p, err := s.path(key)
	if err != nil {
		return nil, 0, ErrNoObject
	}
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, ErrNoObject
	}
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, st.Size(), nil
}

func (s LocalStore) Delete(_ context.Context, keys ...string) error {
	var all []error
	dirs := map[string]bool{}
	for _, k := range keys {
		p, err := s.path(k)
		if err != nil {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			all = append(all, err)
		}
		dirs[filepath.Dir(p)] = true
	}
	for d := range dirs {
		_ = os.Remove(d) // only when empty
	}
	return errors.Join(all...)
}

// S3Config configures an S3Store.
type S3Config struct {
	Endpoint  string // host[:port] or a URL (http:// means no TLS)
	Bucket    string
	Region    string // if empty, us-east-1
	AccessKey string
	SecretKey string
	PathStyle bool // path-style requests (MinIO, most self-hosted stores)
}

// S3Store keeps files in a bucket of any S3-compatible store (minio-go).
type S3Store struct {
	c      *minio.Client
	bucket string
}

// NewS3Store returns a store on the bucket of cfg. It does not create the
// bucket.
func NewS3Store(cfg S3Config) (*S3Store, error) {
	endpoint, secure := cfg.Endpoint, true
	switch {
	case strings.HasPrefix(endpoint, "http://"):
		endpoint, secure = strings.TrimPrefix(endpoint, "http://"), false
	case strings.HasPrefix(endpoint, "https://"):
		endpoint = strings.TrimPrefix(endpoint, "https://")
	}
	endpoint = strings.TrimRight(endpoint, "/")
	region := cfg.Region
	if region == "" {
		region = "us-east-1"
	}
	lookup := minio.BucketLookupAuto
	if cfg.PathStyle {
		lookup = minio.BucketLookupPath
	}
	c, err := minio.New(endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:       secure,
		Region:       region,
		BucketLookup: lookup,
	})
	if err != nil {
		return nil, fmt.Errorf("export: s3 client: %w", err)
	}
	return &S3Store{c: c, bucket: cfg.Bucket}, nil
}

// Put uploads r. With a known size and an *os.File (a ReaderAt), minio-go
// sends multipart sections straight from the file, without buffering parts
// in memory. DisableContentSha256 matters only on plain http: minio-go
// would otherwise sign each part as an aws-chunked stream, which some
// S3-compatible stores (gofakes3 among them) store with its chunk headers;
// over https it changes nothing.
func (s *S3Store) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	_, err := s.c.PutObject(ctx, s.bucket, key, r, size, minio.PutObjectOptions{ContentType: contentType(key), DisableContentSha256: true})
	if err != nil {
		return fmt.Errorf("s3 put %s: %w", key, err)
	}
	return nil
}

func (s *S3Store) Open(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	obj, err := s.c.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, 0, fmt.Errorf("s3 get %s: %w", key, err)
	}
	st, err := obj.Stat()
	if err != nil {
		obj.Close()
		if minio.ToErrorResponse(err).Code == "NoSuchKey" {
			return nil, 0, ErrNoObject
		}
		return nil, 0, fmt.Errorf("s3 stat %s: %w", key, err)
	}
	return obj, st.Size, nil
}

func (s *S3Store) Delete(ctx context.Context, keys ...string) error {
	var all []error
	for _, k := range keys {
		if err := s.c.RemoveObject(ctx, s.bucket, k, minio.RemoveObjectOptions{}); err != nil && minio.ToErrorResponse(err).Code != "NoSuchKey" {
			all = append(all, fmt.Errorf("s3 delete %s: %w", k, err))
		}
	}
	return errors.Join(all...)
}

func contentType(key string) string {
	if strings.HasSuffix(key, ".json") {
		return "application/json"
	}
	return "application/gzip"
}
