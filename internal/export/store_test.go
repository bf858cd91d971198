package export

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// storeContract runs the same checks on any Store: put, open, replace,
// delete, and a missing key as ErrNoObject.
func storeContract(t *testing.T, st Store, big int) {
	ctx := context.Background()
	if _, _, err := st.Open(ctx, "exp_missing/runs.ndjson.gz"); !errors.Is(err, ErrNoObject) {
		t.Fatalf("open missing: %v, want ErrNoObject", err)
	}
	// A file of a few parts, given as an *os.File as the writer does.
	data := make([]byte, big)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(t.TempDir(), "part")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	key := "exp_1/runs.ndjson.gz"
	if err := st.Put(ctx, key, f, int64(len(data))); err != nil {
		t.Fatalf("put: %v", err)
	}
	rc, size, err := st.Open(ctx, key)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || size != int64(len(data)) || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes (size %d, err %v), want %d identical bytes", len(got), size, err, len(data))
	}
	// Replacing an object leaves only the new bytes.
	if err := st.Put(ctx, key, bytes.NewReader([]byte("small")), 5); err != nil {
		t.Fatal(err)
	}
	rc, _, err = st.Open(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(rc)
	rc.Close()
	if string(got) != "small" {
		t.Fatalf("after replace: %q", got)
	}
	if err := st.Delete(ctx, key, "exp_1/never-written.json"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, _, err := st.Open(ctx, key); !errors.Is(err, ErrNoObject) {
		t.Fatalf("open after delete: %v, want ErrNoObject", err)
	}
}

// TestS3Store runs the store contract against gofakes3, an in-process
// S3-compatible server, through minio-go with path-style requests; the
// large object (20 MiB) goes up in multipart sections read from the file.
func TestS3Store(t *testing.T) {
	backend := s3mem.New()
	srv := httptest.NewServer(gofakes3.New(backend).Server())
	defer srv.Close()
	if err := backend.CreateBucket("sluice-exports"); err != nil {
		t.Fatal(err)
	}
	st, err := NewS3Store(S3Config{Endpoint: srv.URL, Bucket: "sluice-exports", AccessKey: "test-access", SecretKey: "test-secret", PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	storeContract(t, st, 20<<20)
	// A bucket that does not exist is an error, not "no object".
	bad, _ := NewS3Store(S3Config{Endpoint: srv.URL, Bucket: "no-such-bucket", AccessKey: "a", SecretKey: "b", PathStyle: true})
	if err := bad.Put(context.Background(), "exp_2/manifest.json", bytes.NewReader([]byte("{}")), 2); err == nil {
		t.Fatal("put into a missing bucket succeeded")
	}
}

func TestLocalStore(t *testing.T) {
	dir := t.TempDir()
	storeContract(t, LocalStore{Dir: dir}, 1<<20)
	if _, err := os.Stat(filepath.Join(dir, "exp_1")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("empty export directory left behind: %v", err)
	}
	if err := (LocalStore{Dir: dir}).Put(context.Background(), "../escape", bytes.NewReader(nil), 0); err == nil {
		t.Fatal("a key leaving the directory was accepted")
	}
}

func TestSigner(t *testing.T) {
	s := NewSigner([]byte("0123456789abcdef0123456789abcdef"))
	now := time.Unix(1_800_000_000, 0)
	exp := now.Add(time.Minute)
	path := s.Path("exp_01", "runs.ndjson.gz", exp)
	u, err := parse(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.check("exp_01", "runs.ndjson.gz", u["exp"], u["sig"], now); err != nil {
		t.Fatalf("valid URL refused: %v", err)
	}
	if err := s.check("exp_01", "runs.ndjson.gz", u["exp"], u["sig"], exp); !errors.Is(err, errExpired) {
		t.Fatalf("at expiry: %v, want expired", err)
	}
	for name, c := range map[string][4]string{
		"other file":     {"exp_01", "steps.ndjson.gz", u["exp"], u["sig"]},
		"other export":   {"exp_02", "runs.ndjson.gz", u["exp"], u["sig"]},
		"longer expiry":  {"exp_01", "runs.ndjson.gz", "1900000000", u["sig"]},
		"no signature":   {"exp_01", "runs.ndjson.gz", u["exp"], ""},
		"garbage expiry": {"exp_01", "runs.ndjson.gz", "soon", u["sig"]},
	} {
		if err := s.check(c[0], c[1], c[2], c[3], now); !errors.Is(err, errBadSignature) {
			t.Errorf("%s: %v, want bad signature", name, err)
		}
	}
	if err := NewSigner([]byte("another secret of 32 bytes......")).check("exp_01", "runs.ndjson.gz", u["exp"], u["sig"], now); !errors.Is(err, errBadSignature) {
		t.Errorf("another server secret: %v, want bad signature", err)
	}
}
