package events

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// publishTimeout bounds one batch of PUBLISHes, and how long Publish waits
// for room in a full queue: a Redis outage must not stall runs (subscribers
// fill the gap from the log).
const publishTimeout = 2 * time.Second

// Queue sizes: how many notices may wait for the sender, and how many it
// sends in one pipelined round trip.
const (
	publishQueue = 4096
	publishBatch = 128
)

// RedisPublisher is responsible for telling every API process about a
// committed run change: one PUBLISH on the tenant's channel.
//
// Publish does not wait for Redis: the state machine calls it right after a
// commit, and the worker's next transaction (a chained step's claim) should
// not wait a Redis round trip behind it. One sender goroutine per
// publisher takes the notices in the order they were handed over and sends
// what has gathered in one pipelined round trip, so notices leave a process
// in commit order. When the queue is full Publish waits for room (up to
// publishTimeout), which slows committers down to Redis's pace instead of
// losing notices. Close sends what is queued and stops the sender; a
// Publish after Close sends inline.
type RedisPublisher struct {
	rdb redis.UniversalClient
	log *slog.Logger

	mu     sync.RWMutex // held for reading while a message is queued
	closed bool
	queue  chan outMessage
	done   chan struct{}
}

type outMessage struct {
	channel string
	body    []byte
	runID   string // for the log of a failed send
}

// NewRedisPublisher publishes through rdb and starts its sender; Close
// stops it. log nil means slog.Default().
func NewRedisPublisher(rdb redis.UniversalClient, log *slog.Logger) *RedisPublisher {
	if log == nil {
		log = slog.Default()
	}
	p := &RedisPublisher{rdb: rdb, log: log, queue: make(chan outMessage, publishQueue), done: make(chan struct{})}
	go p.send()
	return p
}

// Close sends the queued notices and stops the sender. Later Publish calls
// send inline. It is safe to call more than once.
func (p *RedisPublisher) Close() {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.queue)
	}
	p.mu.Unlock()
	<-p.done
}

// Publish hands n to the sender for the API processes. Delivery is best
// effort: a failure is logged and dropped.
func (p *RedisPublisher) Publish(ctx context.Context, n Notice) {
	if n.TenantID == "" || n.RunID == "" {
		return
	}
	b, err := json.Marshal(n)
	if err != nil {
		p.log.WarnContext(ctx, "encode run notice", "err", err, "run_id", n.RunID)
		return
	}
	p.enqueue(ctx, outMessage{channel: Channel(n.TenantID), body: b, runID: n.RunID})
}

func (p *RedisPublisher) enqueue(ctx context.Context, m outMessage) {
	p.mu.RLock()
	if p.closed {
		p.mu.RUnlock()
		p.publish(ctx, []outMessage{m})
		return
	}
	select {
	case p.queue <- m:
		p.mu.RUnlock()
		return
	default:
	}
	// Full: Redis is slower than the committers, or down.
	t := time.NewTimer(publishTimeout)
	defer t.Stop()
	select {
	case p.queue <- m:
	case <-t.C:
		p.log.WarnContext(ctx, "run notice queue full; subscribers will read the gap from the log", "run_id", m.runID)
	}
	p.mu.RUnlock()
}

// send is the sender: it takes what is queued, up to publishBatch at a
// time, and publishes it in one round trip, until Close.
func (p *RedisPublisher) send() {
	defer close(p.done)
	batch := make([]outMessage, 0, publishBatch)
	for m := range p.queue {
		batch = append(batch[:0], m)
	more:
		for len(batch) < publishBatch {
			select {
			case m, ok := <-p.queue:
				if !ok {
					break more
				}
				batch = append(batch, m)
			default:
				break more
			}
		}
		p.publish(context.Background(), batch)
	}
}

// publish sends batch in one round trip.
func (p *RedisPublisher) publish(ctx context.Context, batch []outMessage) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
	defer cancel()
	_, err := p.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for _, m := range batch {
			pipe.Publish(ctx, m.channel, m.body)
		}
		return nil
	})
	if err != nil {
		p.log.WarnContext(ctx, "publish run notices; subscribers will read the gap from the log", "err", err, "notices", len(batch), "run_id", batch[0].runID)
	}
}

// PublishIncident tells the API processes that an incident changed
// (incidentUpdated). It travels on the tenant's channel as a notice with
// the incident id (inc_...) in runID and its status, and no events; run
// streams skip it. Best effort like Publish.
func (p *RedisPublisher) PublishIncident(ctx context.Context, tenantID, incidentID, status string) {
	p.Publish(ctx, Notice{TenantID: tenantID, RunID: incidentID, Status: status})
}

// PublishKeyRevoked tells every API process that an API key was revoked.
// Best effort like Publish: a process that misses it finds the revocation
// when it re-reads the keys of its open streams (auth.Leases).
func (p *RedisPublisher) PublishKeyRevoked(ctx context.Context, tenantID, keyID string) {
	b, err := json.Marshal(KeyRevoked{TenantID: tenantID, KeyID: keyID})
	if err != nil {
		return
	}
	p.enqueue(ctx, outMessage{channel: KeyRevokedChannel, body: b})
}
