package schedules

import (
	"log/slog"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/runs"
)

// Options configure a Service.
type Options struct {
	Client *ent.Client // the app role's pool, for the ticker's transactions
	Runs   *runs.Service
	Log    *slog.Logger // if nil, slog.Default()
	// Now is the clock of the ticker and of the control side; if nil, the
	// UTC wall clock truncated to microseconds. Tests move it.
	Now func() time.Time
	// Interval is how often the ticker looks for due schedules. If zero,
	// 1s (SLUICE_SCHEDULE_INTERVAL).
	Interval time.Duration
}

// Limits and defaults.
const (
	DefaultCatchupWindow = time.Hour
	// MinCatchupWindow: a slot acted on later than this after it was due
	// is still on time, whatever catchupWindow says (a ticker pass is not
	// instant).
	MinCatchupWindow = 10 * time.Second
	MaxBackfillSlots = 1000
	// maxSlotsPerPass bounds the slots one pass acts on per schedule; the
	// next pass goes on.
	maxSlotsPerPass = 1000
	// maxMissedRecorded: missed slots past this many in one pass are
	// recorded as one MISSED action that counts them.
	maxMissedRecorded = 100
	maxNote           = 1000
)

// Service is the schedules room's door.
type Service struct {
	o   Options
	log *slog.Logger
}

// New returns a Service.
func New(o Options) *Service {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	return &Service{o: o, log: o.Log}
}

func (s *Service) now() time.Time { return s.o.Now().UTC() }
