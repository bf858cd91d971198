package export

import (
	"database/sql"
	"log/slog"
	"time"

	"github.com/sluicehq/sluice/ent"
)

// Options configure a Service.
type Options struct {
	Client *ent.Client // the app role's pool, for the driver's and purge's transactions
	DB     *sql.DB     // the same pool, for the singleton locks
	Store  Store       // where files go; required
	// URLSecret signs download URLs; required (config: SLUICE_EXPORT_URL_SECRET,
	// derived from the JWT secret in development).
	URLSecret []byte
	Log       *slog.Logger // if nil, slog.Default()
	// Now is the clock; if nil, the UTC wall clock truncated to microseconds.
	Now func() time.Time
	// TTL is how long an export's files are kept after it is created
	// (SLUICE_EXPORT_TTL). If zero, 7 days.
	TTL time.Duration
	// URLTTL is how long a download URL works (SLUICE_EXPORT_URL_TTL); a
	// caller may ask for less. If zero, 15 minutes.
	URLTTL time.Duration
	// PublicURL prefixes download URLs (SLUICE_PUBLIC_URL); if empty, they
	// are paths on the API server.
	PublicURL string
	// Interval is how often a worker looks for queued exports
	// (SLUICE_EXPORT_INTERVAL). If zero, 2s.
	Interval time.Duration
	// PurgeInterval is how often the purge of expired exports runs
	// (SLUICE_EXPORT_PURGE_INTERVAL). If zero, 1 minute.
	PurgeInterval time.Duration
	// ScratchDir holds a file while it is written, before it goes to the
	// store. If empty, the OS temp dir.
	ScratchDir string
	// PageSize is how many runs (and audit entries) one transaction reads;
	// children (events, steps, cost) are read in pages of 4x it. If zero, 200.
	PageSize int
}

// Limits.
const (
	MaxRange    = 366 * 24 * time.Hour
	MinURLTTL   = time.Second
	maxParallel = 2 // exports one worker writes at once
)

// Service is the export room's door.
type Service struct {
	o      Options
	log    *slog.Logger
	signer *Signer
	slots  chan struct{}
}

// New returns a Service.
func New(o Options) *Service {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }
	}
	if o.TTL <= 0 {
		o.TTL = 7 * 24 * time.Hour
	}
	if o.URLTTL <= 0 {
		o.URLTTL = 15 * time.Minute
	}
	if o.Interval <= 0 {
		o.Interval = 2 * time.Second
	}
	if o.PurgeInterval <= 0 {
		o.PurgeInterval = time.Minute
	}
	if o.PageSize <= 0 {
		o.PageSize = 200
	}
	return &Service{o: o, log: o.Log, signer: NewSigner(o.URLSecret), slots: make(chan struct{}, maxParallel)}
}

func (s *Service) now() time.Time { return s.o.Now().UTC() }
