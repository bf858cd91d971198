package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Group commit: under load, the transactions of many callers (the run state
// machine's steps of different runs) are run one after the other in one
// transaction and committed together. Each caller's work is the same as in
// a transaction of its own (InTenant), and is durable when its call returns,
// as before; what the callers share is BEGIN, COMMIT and the round trips in
// between: a caller's held writes go to Postgres in one batch with the next
// caller's first statement.
//
// There is no wait to fill a group. A Group runs at most Lanes transactions
// at a time; a caller that finds a lane free runs its transaction at once,
// alone, as InTenant would. Callers that arrive while every lane is busy
// queue, and the next lane to come free takes every queued caller of the
// same tenant and transaction kind (up to MaxPerGroup) as one group. So a
// single run's latency is unchanged, and groups form only when there are
// more transactions than lanes, which is exactly when commits and round
// trips are what limits throughput.
//
// A group fails as a whole: if one caller's work fails, or a held write
// fails its count check, the group's transaction rolls back and every
// caller of it runs again in a transaction of its own (InTenant), on its own
// goroutine, so one caller's failure or panic is its own as before. A
// caller's work must therefore be safe to run again after a rollback, as
// any transaction's must be under retries. Only a failure of COMMIT itself
// is shared: whether it committed is then unknown, and every caller gets
// the error, as a caller of InTenant would.
//
// Within a group the callers run in the order of their keys (the run ids),
// so two groups that touch the same rows lock them in the same order.
// A group holds every caller's locks until it commits.
type Group struct {
	client *ent.Client
	lanes  int
	max    int

	mu      sync.Mutex
	busy    int
	pending []*groupCall

	units, groups, alone atomic.Int64
}

// GroupStats counts what a Group did: callers served in groups of two or
// more (Grouped), the groups they formed (Groups), and callers that ran
// again alone after their group failed (Retried).
type GroupStats struct {
	Grouped, Groups, Retried int64
}

// DefaultLanes and DefaultMaxPerGroup are NewGroup's defaults.
const (
	DefaultLanes       = 4
	DefaultMaxPerGroup = 16
)

// NewGroup returns a Group running at most lanes transactions of client at
// a time (DefaultLanes if zero or less), each of at most maxPerGroup
// callers (DefaultMaxPerGroup if zero or less).
func NewGroup(client *ent.Client, lanes, maxPerGroup int) *Group {
	if lanes <= 0 {
		lanes = DefaultLanes
	}
	if maxPerGroup <= 0 {
		maxPerGroup = DefaultMaxPerGroup
	}
	return &Group{client: client, lanes: lanes, max: maxPerGroup}
}

// Stats reports what the group did so far.
func (g *Group) Stats() GroupStats {
	return GroupStats{Grouped: g.units.Load(), Groups: g.groups.Load(), Retried: g.alone.Load()}
}

type groupCall struct {
	ctx     context.Context
	key     string
	tenant  string
	generic bool
	fn      func(ctx context.Context) error
	done    chan groupResult
}

// groupResult tells a queued caller what became of it: its work ran in a
// group (err is its outcome), it leads the next group (lead), or it must
// run alone (alone).
type groupResult struct {
	err   error
	lead  []*groupCall // the group, this caller first
	alone bool
}

// InTenant runs fn as InTenant does, possibly in one transaction with other
// callers' (see Group). key orders the callers of one group (the row the
// caller locks first, e.g. its run id).
func (g *Group) InTenant(ctx context.Context, key string, fn func(ctx context.Context) error) error {
	v := viewer.FromContext(ctx)
	if v == nil || v.TenantID == "" {
		return errors.New("store: no tenant in context")
	}
	generic, _ := ctx.Value(genericPlansKey{}).(bool)
	c := &groupCall{ctx: ctx, key: key, tenant: v.TenantID, generic: generic, fn: fn}
	g.mu.Lock()
	if g.busy < g.lanes {
		g.busy++
		g.mu.Unlock()
		return g.lead([]*groupCall{c})
	}
	c.done = make(chan groupResult, 1)
	g.pending = append(g.pending, c)
	g.mu.Unlock()
	r := <-c.done
	switch {
	case r.lead != nil:
		return g.lead(r.lead)
	case r.alone:
		g.alone.Add(1)
		return InTenant(ctx, g.client, fn)
	default:
		return r.err
	}
}

// lead runs the group calls (calls[0] is the caller) on a lane the caller
// holds, then hands the lane to the next queued group, or frees it.
func (g *Group) lead(calls []*groupCall) error {
	defer g.handOff()
	if len(calls) == 1 {
		return InTenant(calls[0].ctx, g.client, calls[0].fn)
	}
	me := calls[0]
	results, ok := g.runGroup(calls)
	if !ok {
		for _, c := range calls[1:] {
			c.done <- groupResult{alone: true}
		}
		g.alone.Add(1)
		return InTenant(me.ctx, g.client, me.fn)
	}
	for i, c := range calls[1:] {
		c.done <- groupResult{err: results[i+1]}
	}
	return results[0]
}

// handOff gives the lane to the oldest queued caller, with the queued
// callers of the same tenant and kind as its group, or frees it.
func (g *Group) handOff() {
	g.mu.Lock()
	if len(g.pending) == 0 {
		g.busy--
		g.mu.Unlock()
		return
	}
	first := g.pending[0]
	group := []*groupCall{first}
	rest := g.pending[:0]
	for _, c := range g.pending[1:] {
		if len(group) < g.max && c.tenant == first.tenant && c.generic == first.generic {
			group = append(group, c)
		} else {
			rest = append(rest, c)
		}
	}
	clear(g.pending[len(rest):])
	g.pending = rest
	g.mu.Unlock()
	first.done <- groupResult{lead: group}
}

// runGroup runs calls in one transaction in the order of their keys and
// commits it. It returns each call's outcome in the order given, and false
// when the group failed before its commit was sent (rolled back: every call
// must run again alone). Calls whose context is done are answered with its
// error and left out.
func (g *Group) runGroup(calls []*groupCall) (results []error, ok bool) {
	results = make([]error, len(calls))
	order := make([]int, 0, len(calls))
	for i, c := range calls {
		if err := c.ctx.Err(); err != nil {
			results[i] = err
			continue
		}
		order = append(order, i)
	}
	if len(order) == 0 {
		return results, true
	}
	slices.SortStableFunc(order, func(a, b int) int {
		switch {
		case calls[a].key < calls[b].key:
			return -1
		case calls[a].key > calls[b].key:
			return 1
		}
		return 0
	})
	// The transaction outlives any one caller's context; each caller's
	// statements still run with its own.
	first := calls[order[0]]
	tx, err := BeginTenant(context.WithoutCancel(first.ctx), g.client, first.tenant)
	if err != nil {
		return nil, false
	}
	for n, i := range order {
		c := calls[i]
		cctx := c.ctx
		if n > 0 && calls[order[n-1]].key == c.key {
			// A second caller of the same run in this transaction: what the
			// first one made ready is not committed yet (see RepeatInGroup).
			cctx = context.WithValue(cctx, repeatKey{}, true)
		}
		if err := runCall(ent.NewContext(ent.NewTxContext(cctx, tx), tx.Client()), c.fn); err != nil {
			_ = tx.Rollback()
			return nil, false
		}
	}
	// The last caller's held writes go with COMMIT; their failure (a count
	// check) is told apart from a failure of COMMIT itself: the group rolled
	// back, and every caller runs again alone.
	if err := tx.Commit(); err != nil {
		if failedBeforeCommit(err) {
			return nil, false
		}
		err = fmt.Errorf("commit: %w", err)
		for _, i := range order {
			results[i] = err
		}
	}
	g.units.Add(int64(len(order)))
	g.groups.Add(1)
	return results, true
}

// runCall runs fn, turning a panic into an error: the call runs again
// alone, on its caller's goroutine, where a panic is the caller's.
func runCall(ctx context.Context, fn func(ctx context.Context) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return fn(ctx)
}

type repeatKey struct{}

// RepeatInGroup reports whether the caller runs in a group transaction
// after another caller with the same key (the same run): rows that caller
// wrote are visible but not committed, so work that must only start after
// a commit (a step whose input was recorded by the earlier caller) must
// not start in this caller.
func RepeatInGroup(ctx context.Context) bool {
	v, _ := ctx.Value(repeatKey{}).(bool)
	return v
}
