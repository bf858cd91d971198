package config

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Export configures data exports (internal/export).
type Export struct {
	// Dir is where exports are stored on local disk when no S3 store is
	// configured (SLUICE_EXPORT_DIR). If unset, sluice-exports under the
	// OS temp dir.
	Dir string
	// S3 is the S3-compatible store; used when its Endpoint is set.
	S3 ExportS3
	// URLSecret signs download URLs (SLUICE_EXPORT_URL_SECRET, at least 32
	// bytes). Required in production; in development, if unset, derived from
	// the JWT secret so that every process of a development setup agrees.
	URLSecret []byte
	// TTL is how long an export's files are kept (SLUICE_EXPORT_TTL). If
	// unset, 168h (7 days).
	TTL time.Duration
	// URLTTL is how long a download URL works (SLUICE_EXPORT_URL_TTL). If
	// unset, 15m.
	URLTTL time.Duration
	// Interval is how often a worker looks for queued exports
	// (SLUICE_EXPORT_INTERVAL). If unset, 2s.
	Interval time.Duration
	// PurgeInterval is how often expired exports are purged, one worker at
	// a time (SLUICE_EXPORT_PURGE_INTERVAL). If unset, 1m.
	PurgeInterval time.Duration
}

// ExportS3 is an S3-compatible export store.
type ExportS3 struct {
	Endpoint  string // SLUICE_EXPORT_S3_ENDPOINT: host[:port] or http(s)://host[:port]
	Bucket    string // SLUICE_EXPORT_S3_BUCKET
	Region    string // SLUICE_EXPORT_S3_REGION [us-east-1]
	AccessKey string // SLUICE_EXPORT_S3_ACCESS_KEY
	SecretKey string // SLUICE_EXPORT_S3_SECRET_KEY
	PathStyle bool   // SLUICE_EXPORT_S3_PATH_STYLE [false]
}

func loadExport(getenv func(string) string, development bool, jwtSecret string, errs *[]error) Export {
	e := Export{
		Dir: strings.TrimSpace(getenv("SLUICE_EXPORT_DIR")),
		S3: ExportS3{
			Endpoint:  strings.TrimSpace(getenv("SLUICE_EXPORT_S3_ENDPOINT")),
			Bucket:    strings.TrimSpace(getenv("SLUICE_EXPORT_S3_BUCKET")),
			Region:    strings.TrimSpace(getenv("SLUICE_EXPORT_S3_REGION")),
			AccessKey: getenv("SLUICE_EXPORT_S3_ACCESS_KEY"),
			SecretKey: getenv("SLUICE_EXPORT_S3_SECRET_KEY"),
		},
		TTL:           durationVar(getenv, "SLUICE_EXPORT_TTL", 7*24*time.Hour, errs),
		URLTTL:        durationVar(getenv, "SLUICE_EXPORT_URL_TTL", 15*time.Minute, errs),
		Interval:      durationVar(getenv, "SLUICE_EXPORT_INTERVAL", 2*time.Second, errs),
		PurgeInterval: durationVar(getenv, "SLUICE_EXPORT_PURGE_INTERVAL", time.Minute, errs),
	}
	if e.Dir == "" {
		e.Dir = filepath.Join(os.TempDir(), "sluice-exports")
	}
	if v := getenv("SLUICE_EXPORT_S3_PATH_STYLE"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			*errs = append(*errs, fmt.Errorf("SLUICE_EXPORT_S3_PATH_STYLE: %w", err))
		}
		e.S3.PathStyle = b
	}
	if e.S3.Endpoint != "" && (e.S3.Bucket == "" || e.S3.AccessKey == "" || e.S3.SecretKey == "") {
		*errs = append(*errs, fmt.Errorf("SLUICE_EXPORT_S3_ENDPOINT needs SLUICE_EXPORT_S3_BUCKET, SLUICE_EXPORT_S3_ACCESS_KEY and SLUICE_EXPORT_S3_SECRET_KEY"))
	}
	switch secret := getenv("SLUICE_EXPORT_URL_SECRET"); {
	case secret != "" && len(secret) < 32:
		*errs = append(*errs, fmt.Errorf("SLUICE_EXPORT_URL_SECRET must be at least 32 bytes"))
	case secret != "":
		e.URLSecret = []byte(secret)
	case development:
		// Every process of a development setup (several API servers,
		// workers) must sign alike: derived from the shared JWT setting.
		sum := sha256.Sum256([]byte("sluice-export-url-secret:" + jwtSecret))
		e.URLSecret = sum[:]
	}
	return e
}
