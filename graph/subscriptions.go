package graph

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/runevent"
	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/events"
	"github.com/sluicehq/sluice/internal/eventtype"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/livews"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// LiveUpdates serves subscription operations. It hands subscription
// resolvers the process's Hub and the app pool, ends a stream with an error
// when its resolver asks for one, and gives the fields below a subscription
// one short tenant transaction per delivered value. TenantTransaction skips
// subscriptions: a transaction must never stay open while a subscriber waits.
//
// runEvents values go through Frames: InterceptResponse takes the stream's
// next event itself (on the operation's goroutine, which then writes the
// frame: no goroutine in between) and renders each (event, selection,
// access) once per process, giving every other subscriber of it the same
// bytes.
type LiveUpdates struct {
	Hub       *events.Hub
	Client    *ent.Client // app role pool
	Presenter graphql.ErrorPresenterFunc
	// Frames, if set, shares rendered runEvents values between subscribers.
	Frames *FrameCache
}

var _ interface {
	graphql.HandlerExtension
	graphql.OperationInterceptor
	graphql.ResponseInterceptor
	graphql.FieldInterceptor
} = LiveUpdates{}

func (LiveUpdates) ExtensionName() string                   { return "LiveUpdates" }
func (LiveUpdates) Validate(graphql.ExecutableSchema) error { return nil }

// liveOperation is the state of one subscription operation.
type liveOperation struct {
	live *LiveUpdates
	mu   sync.Mutex
	end  *gqlerror.Error // sent once after the resolver's channel closes
	feed *eventFeed      // set by a runEvents resolver
}

// eventFeed carries a runEvents stream's events to gqlgen through
// InterceptResponse, which takes each event off the stream itself, so that
// it can answer with a value rendered for another subscriber instead of
// executing the selection again.
type eventFeed struct {
	stream *runEventStream    // pulled by InterceptResponse
	gql    chan *ent.RunEvent // the resolver's channel gqlgen reads; buffer 1
	// cacheable: the selection reads no database (no run edge) and the
	// operation's digest could be taken.
	cacheable bool
	selection [32]byte // selectionDigest
	ended     bool     // the stream ended; gql is closed
}

type liveOperationKey struct{}

// valueTx is the lazily opened transaction of one delivered value.
type valueTx struct {
	client *ent.Client
	mu     sync.Mutex
	tx     *ent.Tx
}

type valueTxKey struct{}

func isSubscription(ctx context.Context) bool {
	if !graphql.HasOperationContext(ctx) {
		return false
	}
	op := graphql.GetOperationContext(ctx)
	return op.Operation != nil && op.Operation.Operation == ast.Subscription
}

func (l LiveUpdates) InterceptOperation(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	if isSubscription(ctx) {
		ctx = context.WithValue(ctx, liveOperationKey{}, &liveOperation{live: &l})
	}
	return next(ctx)
}

func (l LiveUpdates) InterceptResponse(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
	op, ok := ctx.Value(liveOperationKey{}).(*liveOperation)
	if !ok {
		return next(ctx)
	}
	op.mu.Lock()
	feed := op.feed
	op.mu.Unlock()
	var resp *graphql.Response
	if feed != nil {
		resp = l.nextEvent(ctx, feed, next)
	} else {
		resp = l.render(ctx, next)
	}
	if resp == nil {
		op.mu.Lock()
		defer op.mu.Unlock()
		if op.end != nil {
			resp, op.end = &graphql.Response{Errors: gqlerror.List{op.end}}, nil
		}
	}
	return resp
}

// render executes the operation's selection for its next value, with the
// value's transaction.
func (l LiveUpdates) render(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
	vt := &valueTx{client: l.Client}
	resp := next(context.WithValue(ctx, valueTxKey{}, vt))
	vt.finish()
	return resp
}

// nextEvent takes a runEvents stream's next event and answers with its
// value: shared through Frames when the selection allows, rendered
// otherwise. It returns nil once the stream ended (or ctx did). Responses
// of one operation are asked for one at a time, so the feed needs no lock.
func (l LiveUpdates) nextEvent(ctx context.Context, f *eventFeed, next graphql.ResponseHandler) *graphql.Response {
	if f.ended {
		return nil
	}
	e := f.stream.next(ctx)
	if e == nil {
		f.ended = true
		close(f.gql)
		return nil
	}
	render := func() *graphql.Response {
		f.gql <- e // never blocks: the buffer is emptied below
		resp := l.render(ctx, next)
		select {
		case <-f.gql: // gqlgen did not take it (ctx ended first)
		default:
		}
		return resp
	}
	if !f.cacheable || l.Frames == nil {
		if l.Frames != nil {
			l.Frames.count(l.Frames.miss)
		}
		return render()
	}
	return l.Frames.value(ctx, frameKey{eventID: e.ID, selection: f.selection}, render)
}

// InterceptField runs each resolver below a subscription inside the value's
// transaction (opened on first use), one at a time: a Postgres connection
// runs one statement at a time, and gqlgen resolves siblings concurrently.
func (l LiveUpdates) InterceptField(ctx context.Context, next graphql.Resolver) (any, error) {
	vt, ok := ctx.Value(valueTxKey{}).(*valueTx)
	fc := graphql.GetFieldContext(ctx)
	if !ok || fc == nil || fc.Object == "Subscription" || (!fc.IsResolver && !fc.IsMethod) {
		return next(ctx)
	}
	vt.mu.Lock()
	defer vt.mu.Unlock()
	if vt.tx == nil {
		v := viewer.FromContext(ctx)
		if v == nil {
			return nil, errs.E(errs.Unauthenticated, "authentication required")
		}
		tx, err := store.BeginTenant(ctx, vt.client, v.TenantID)
		if err != nil {
			return nil, err
		}
		vt.tx = tx
	}
	return next(ent.NewContext(ent.NewTxContext(ctx, vt.tx), vt.tx.Client()))
}

// finish ends the value's transaction; fields only read, so it rolls back.
func (vt *valueTx) finish() {
	vt.mu.Lock()
	defer vt.mu.Unlock()
	if vt.tx != nil {
		_ = vt.tx.Rollback()
		vt.tx = nil
	}
}

// liveSubscriber returns the operation's live state and the viewer, who must
// be allowed to read runs.
func liveSubscriber(ctx context.Context) (*liveOperation, *viewer.Viewer, error) {
	v := viewer.FromContext(ctx)
	if v == nil {
		return nil, nil, errs.E(errs.Unauthenticated, "authentication required")
	}
	if !v.Has(viewer.RoleEditor, viewer.RoleOperator, viewer.RoleViewer) {
		return nil, nil, errs.E(errs.Forbidden, "reading runs needs a role in this tenant")
	}
	if err := auth.LeaseFrom(ctx).Err(); err != nil {
		return nil, nil, err // the credential ended; the connection is closing
	}
	op, ok := ctx.Value(liveOperationKey{}).(*liveOperation)
	if !ok || op.live.Hub == nil || op.live.Client == nil {
		return nil, nil, fmt.Errorf("live updates are not configured on this server")
	}
	return op, v, nil
}

// credentialEnded ends the stream with the lease's UNAUTHENTICATED error:
// the credential that opened it expired or was revoked.
func (op *liveOperation) credentialEnded(ctx context.Context) {
	op.endWith(op.present(ctx, auth.LeaseFrom(ctx).Err()))
}

// endWith makes the stream end with err after its last value (transports
// send it as the final message instead of a plain completion).
func (op *liveOperation) endWith(err *gqlerror.Error) {
	op.mu.Lock()
	defer op.mu.Unlock()
	op.end = err
}

// endIfDropped ends op with dropError when the hub closed sub (a slow
// subscriber, a shutdown). A subscription closed by its own stream ending
// (the client's stop or complete cancels the stream's context, which closes
// it) carries no reason and ends the stream without an error: its closed
// channel and the cancelled context race in the stream's select.
func (op *liveOperation) endIfDropped(ctx context.Context, sub *events.Subscription, afterSeq int64) {
	if err := sub.Err(); err != nil {
		op.endWith(dropError(ctx, err, afterSeq))
	}
}

// dropError tells a subscriber that the server ended its stream, and for
// runEvents (afterSeq >= 0) where to pick it up again.
func dropError(ctx context.Context, reason error, afterSeq int64) *gqlerror.Error {
	what, code := "slow subscriber", errs.RateLimited
	if errors.Is(reason, events.ErrHubClosed) {
		what, code = "server shutting down", errs.Internal
	}
	ext := map[string]any{"code": string(code)}
	msg := what + ": subscribe again"
	if afterSeq >= 0 {
		msg = fmt.Sprintf("%s: resume with afterSeq=%d", what, afterSeq)
		ext["afterSeq"] = afterSeq
	}
	return &gqlerror.Error{Message: msg, Path: graphql.GetPath(ctx), Extensions: ext}
}

func (op *liveOperation) present(ctx context.Context, err error) *gqlerror.Error {
	if op.live.Presenter != nil {
		return op.live.Presenter(ctx, err)
	}
	return graphql.DefaultErrorPresenter(ctx, err)
}

// catchUpPage bounds one read of stored events.
const catchUpPage = 500

// subscribeRunEvents streams a run's events after afterSeq: first the stored
// ones, then live ones, in seq order with no gap and no duplicate. The Hub
// subscription starts before the first read of the log, so nothing committed
// in between is missed; anything a live notice skips (a notice lost or
// overtaken by a later one) is read from the log. The stream ends once the
// run is final and all of its events were sent.
func subscribeRunEvents(ctx context.Context, runID string, afterSeq *int) (<-chan *ent.RunEvent, error) {
	op, v, err := liveSubscriber(ctx)
	if err != nil {
		return nil, err
	}
	var after int64
	if afterSeq != nil {
		if *afterSeq < 0 {
			return nil, errs.Invalid("afterSeq", "must be 0 or more, got %d", *afterSeq)
		}
		after = int64(*afterSeq)
	}
	s := &runEventStream{
		op: op, tenantID: v.TenantID, runID: runID, last: after,
		reload: selects(ctx, "run"),
		sub:    op.live.Hub.SubscribeRun(v.TenantID, runID),
		lease:  auth.LeaseFrom(ctx),
		ctx:    ctx,
	}
	s.sent = s.last
	feed := &eventFeed{stream: s, gql: make(chan *ent.RunEvent, 1)}
	if !s.reload {
		feed.selection, feed.cacheable = selectionDigest(ctx)
		// Values that read no database are written together; the others
		// (a transaction each) one by one.
		s.flush = livews.Coalesce(ctx)
	}
	// One read checks the run and fetches the first page of its log.
	first, err := s.readLog(ctx)
	switch {
	case ent.IsNotFound(err), err == nil && v.EnvironmentID != "" && first.environmentID != v.EnvironmentID:
		s.sub.Close()
		// Another tenant's run reads exactly like one that never existed.
		return nil, errs.NotFoundf("run", runID)
	case err != nil:
		s.sub.Close()
		return nil, err
	}
	s.queue(first)
	// However the operation ends, its Hub subscription goes with it.
	s.stopSub = context.AfterFunc(ctx, s.sub.Close)
	op.mu.Lock()
	op.feed = feed
	op.mu.Unlock()
	return feed.gql, nil
}

// selects reports whether the current field selects a child named name.
func selects(ctx context.Context, name string) bool {
	for _, f := range graphql.CollectFieldsCtx(ctx, nil) {
		if f.Name == name {
			return true
		}
	}
	return false
}

// runEventStream is one runEvents subscriber. It is pulled: next is called
// by the operation's goroutine (InterceptResponse) for each value, and
// waits on the Hub subscription itself when nothing is queued.
type runEventStream struct {
	// ctx is the resolver's (the operation's, with the field's path): log
	// reads and the stream's errors use it.
	ctx             context.Context
	op              *liveOperation
	tenantID, runID string
	sub             *events.Subscription
	lease           *auth.Lease
	stopSub         func() bool
	// flush, on a livews connection, writes the values handed out so far:
	// they wait in the connection's buffer until the stream has nothing at
	// hand, so a notice's events leave in one write (nil elsewhere).
	flush func()
	last  int64 // seq of the last event queued (or sent)
	sent  int64 // seq of the last event handed out
	// reload: the selection reads the run edge, which events decoded from
	// a notice cannot load; such subscribers read every change from the log.
	reload bool

	pending []*ent.RunEvent // queued, in seq order, after sent
	more    bool            // the last log page read was full: read on
	final   bool            // the run is final and every event is queued
	endErr  *gqlerror.Error // end with this once pending is sent
	ended   bool
}

// logPage is one read of a run's log.
type logPage struct {
	events        []*ent.RunEvent
	final         bool // the run was final when read
	environmentID string
}

// next returns the stream's next event, or nil once it ended: the run is
// final and everything was sent, ctx ended, or the stream ends with an
// error (the operation's end, sent after the last value).
func (s *runEventStream) next(rctx context.Context) *ent.RunEvent {
	ctx := s.ctx
	for {
		if len(s.pending) > 0 {
			e := s.pending[0]
			s.pending[0] = nil
			s.pending = s.pending[1:]
			s.sent = e.Seq
			return e
		}
		switch {
		case s.ended:
			return nil
		case s.endErr != nil:
			s.op.endWith(s.endErr)
			return s.finish()
		case ctx.Err() != nil, rctx.Err() != nil:
			return s.finish()
		case s.more:
			p, err := s.readLog(ctx)
			if err != nil {
				s.fail(ctx, err)
				continue
			}
			s.queue(p)
			continue
		case s.final:
			return s.finish()
		}
		s.flushValues()
		select {
		case <-ctx.Done():
			return s.finish()
		case <-rctx.Done():
			return s.finish()
		case <-s.lease.Done():
			s.op.credentialEnded(ctx)
			return s.finish()
		case n, ok := <-s.sub.C():
			if !ok {
				s.op.endIfDropped(ctx, s.sub, s.sent)
				return s.finish()
			}
			if err := s.deliver(ctx, n); err != nil {
				s.fail(ctx, err)
			}
		}
	}
}

// flushValues writes the values handed out that wait in the connection's
// buffer: called before the stream waits for anything (a notice, a read of
// the log).
func (s *runEventStream) flushValues() {
	if s.flush != nil {
		s.flush()
	}
}

// fail ends the stream with err once what is queued is sent.
func (s *runEventStream) fail(ctx context.Context, err error) {
	s.more, s.final = false, false
	if ctx.Err() != nil {
		s.ended = true
		s.sub.Close()
		return
	}
	s.endErr = s.op.present(ctx, err)
}

// finish ends the stream and its Hub subscription.
func (s *runEventStream) finish() *ent.RunEvent {
	s.ended = true
	s.pending = nil
	if s.stopSub != nil {
		s.stopSub()
	}
	s.sub.Close()
	return nil
}

// deliver queues a notice's events that come next; a gap is read from the
// log first. It marks the stream final once the run is final and all of it
// is queued.
func (s *runEventStream) deliver(ctx context.Context, n *events.Notice) error {
	if n.Resync || s.reload {
		return s.catchUp(ctx)
	}
	for _, e := range n.Events {
		switch {
		case e.Seq <= s.last:
			continue // already queued (from the log or an earlier notice)
		case e.Seq > s.last+1:
			// An earlier notice was lost or is still on its way: the log has
			// it, since notices are published after commit.
			if err := s.catchUp(ctx); err != nil || s.more || s.final {
				return err // the rest comes from the log
			}
			continue
		}
		s.pending = append(s.pending, e.RunEvent(s.tenantID, s.runID))
		s.last = e.Seq
	}
	if !events.Terminal(n.Status) {
		return nil
	}
	if l := len(n.Events); l > 0 && eventtype.Type(n.Events[l-1].Type) == eventtype.ForRunStatus(n.Status) && s.last >= n.Events[l-1].Seq {
		// This notice made the run final and all of it is queued.
		s.final = true
		return nil
	}
	// A final status without its event here (a late step result, or a
	// notice overtaken): the log says whether anything is left.
	return s.catchUp(ctx)
}

// catchUp queues a page of stored events after the last one queued.
func (s *runEventStream) catchUp(ctx context.Context) error {
	p, err := s.readLog(ctx)
	if err != nil {
		return err
	}
	s.queue(p)
	return nil
}

// queue queues a page read from the log; a full page means more to read.
func (s *runEventStream) queue(p logPage) {
	for _, e := range p.events {
		if e.Seq <= s.last {
			continue
		}
		s.pending = append(s.pending, e)
		s.last = e.Seq
	}
	s.more = len(p.events) >= catchUpPage
	s.final = !s.more && p.final
}

// readLog reads the run's status and up to a page of events after the last
// one sent, in one short tenant transaction.
func (s *runEventStream) readLog(ctx context.Context) (logPage, error) {
	s.flushValues()
	var p logPage
	err := store.InTenant(ctx, s.op.live.Client, func(ctx context.Context) error {
		c := ent.FromContext(ctx)
		// Status first: if it is final, every event up to it is committed
		// and the read below sees it.
		r, err := c.Run.Query().Where(run.ID(s.runID)).Select(run.FieldStatus, run.FieldEnvironmentID).Only(ctx)
		if err != nil {
			return err
		}
		p.final, p.environmentID = events.Terminal(string(r.Status)), r.EnvironmentID
		q := c.RunEvent.Query().
			Where(runevent.RunID(s.runID), runevent.SeqGT(s.last)).
			Order(ent.Asc(runevent.FieldSeq)).
			Limit(catchUpPage)
		if s.reload {
			if q, err = q.CollectFields(ctx); err != nil {
				return err
			}
		}
		p.events, err = q.All(ctx)
		return err
	})
	if ent.IsNotFound(err) {
		return p, err
	}
	if err != nil {
		return p, fmt.Errorf("read events of run %s: %w", s.runID, err)
	}
	return p, nil
}

// subscribeRunUpdates streams the runs of the viewer's tenant that match
// where, each time their status or cost changes.
func subscribeRunUpdates(ctx context.Context, where *ent.RunWhereInput) (<-chan *ent.Run, error) {
	op, v, err := liveSubscriber(ctx)
	if err != nil {
		return nil, err
	}
	if where != nil {
		if _, err := where.P(); err != nil && err != ent.ErrEmptyRunWhereInput {
			return nil, errs.Invalid("where", "%v", err)
		}
	}
	s := &runUpdateStream{
		op: op, envID: v.EnvironmentID, where: where,
		sub:  op.live.Hub.SubscribeTenant(v.TenantID),
		out:  make(chan *ent.Run),
		seen: map[string]runSnapshot{},
	}
	go s.run(ctx)
	return s.out, nil
}

// maxSeenRuns bounds the per-subscriber memory of run states; past it the
// memory restarts (at worst one unchanged update is sent again).
const maxSeenRuns = 10000

type runSnapshot struct {
	status string
	cost   int64
}

// runUpdateStream is one runUpdated subscriber.
type runUpdateStream struct {
	op    *liveOperation
	envID string // the viewer is restricted to this environment
	where *ent.RunWhereInput
	sub   *events.Subscription
	out   chan *ent.Run
	seen  map[string]runSnapshot // last status and cost seen per run
}

func (s *runUpdateStream) run(ctx context.Context) {
	defer close(s.out)
	defer s.sub.Close()
	lease := auth.LeaseFrom(ctx)
	for {
		var n *events.Notice
		select {
		case <-ctx.Done():
			return
		case <-lease.Done():
			s.op.credentialEnded(ctx)
			return
		case m, ok := <-s.sub.C():
			if !ok {
				s.op.endIfDropped(ctx, s.sub, -1)
				return
			}
			n = m
		}
		// A resync carries no run: each run's next change shows its state.
		// Notices without a status or cost change (most step events) cost
		// no read.
		if n.Resync || ids.Prefix(n.RunID) == ids.Incident || s.seen[n.RunID] == (runSnapshot{n.Status, n.CostMicroUSD}) {
			continue
		}
		r, err := s.load(ctx, n.RunID)
		if err != nil {
			if ctx.Err() == nil {
				s.op.endWith(s.op.present(ctx, err))
			}
			return
		}
		snap := runSnapshot{n.Status, n.CostMicroUSD}
		if r != nil {
			snap = runSnapshot{string(r.Status), r.CostMicroUsd}
		}
		unchanged := s.seen[n.RunID] == snap
		if len(s.seen) >= maxSeenRuns {
			clear(s.seen)
		}
		s.seen[n.RunID] = snap
		if r == nil || unchanged {
			continue
		}
		select {
		case s.out <- r:
		case <-ctx.Done():
			return
		}
	}
}

// load returns the run when it matches the filter, nil otherwise.
func (s *runUpdateStream) load(ctx context.Context, runID string) (*ent.Run, error) {
	var r *ent.Run
	err := store.InTenant(ctx, s.op.live.Client, func(ctx context.Context) error {
		q := ent.FromContext(ctx).Run.Query().Where(run.ID(runID))
		if s.envID != "" {
			q.Where(run.EnvironmentID(s.envID))
		}
		q, err := s.where.Filter(q)
		if err != nil {
			return err
		}
		if q, err = q.CollectFields(ctx); err != nil {
			return err
		}
		r, err = q.Only(ctx)
		if ent.IsNotFound(err) {
			r, err = nil, nil
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("load run %s: %w", runID, err)
	}
	return r, nil
}
