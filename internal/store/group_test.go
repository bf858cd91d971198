package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/viewer"
)

// groupCall is what one caller of a group test saw in its transaction.
type seen struct {
	txid   int64
	tenant string
}

// groupFixture runs callers through a Group of one lane: the first caller
// holds the lane until the others have queued behind it, so they form
// one group when it is done.
type groupFixture struct {
	*fixture
	g *Group
}

func newGroupFixture(t *testing.T) *groupFixture {
	f := newFixture(t)
	return &groupFixture{fixture: f, g: NewGroup(f.client, 1, 16)}
}

// insert is a caller's work: it holds the insert of row id (which must
// change want rows) and records the transaction id and tenant it ran in.
func (f *groupFixture) insert(id int, want int, saw *seen) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		q, err := Raw(ctx)
		if err != nil {
			return err
		}
		if err := q.QueryRow(ctx, "SELECT txid_current(), current_setting('app.tenant_id')").Scan(&saw.txid, &saw.tenant); err != nil {
			return err
		}
		return Hold(ctx, fmt.Sprintf("held:%d", id), want, f.q("INSERT INTO held (id, v) VALUES ($1, $2) ON CONFLICT DO NOTHING"), id, saw.tenant)
	}
}

// queued waits until n callers are queued behind the busy lane.
func (f *groupFixture) queued(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.g.mu.Lock()
		got := len(f.g.pending)
		f.g.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d callers queued, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// run starts the lane holder (row 0, tenant t0), then the callers (rows
// 1..n, their work from work), waits until they queue, releases the holder
// and returns each caller's error.
func (f *groupFixture) run(t *testing.T, tenants []string, work func(i int) func(ctx context.Context) error) (holder seen, errs []error) {
	t.Helper()
	release := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	holding := make(chan struct{})
	var holderErr error
	go func() {
		defer wg.Done()
		holderErr = f.g.InTenant(viewer.SystemContext(context.Background(), "t0"), "0", func(ctx context.Context) error {
			if err := f.insert(0, 1, &holder)(ctx); err != nil {
				return err
			}
			close(holding)
			<-release
			return nil
		})
	}()
	<-holding
	errs = make([]error, len(tenants))
	for i, tenant := range tenants {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if r := recover(); r != nil {
					errs[i] = fmt.Errorf("recovered: %v", r)
				}
			}()
			// Keys in the reverse of arrival order: the group runs them sorted.
			key := fmt.Sprintf("%03d", len(tenants)-i)
			// Postgres's default plan mode, as the run state machine's
			// transactions (the Group's callers) use.
			errs[i] = f.g.InTenant(GenericPlans(viewer.SystemContext(context.Background(), tenant)), key, work(i+1))
		}()
	}
	f.queued(t, len(tenants))
	close(release)
	wg.Wait()
	if holderErr != nil {
		t.Fatalf("lane holder: %v", holderErr)
	}
	return holder, errs
}

func TestGroupCommitsQueuedCallersInOneTransaction(t *testing.T) {
	f := newGroupFixture(t)
	const n = 5
	saw := make([]seen, n+1)
	var order []int
	var mu sync.Mutex
	holder, errs := f.run(t, []string{"t1", "t1", "t1", "t1", "t1"}, func(i int) func(ctx context.Context) error {
		ins := f.insert(i, 1, &saw[i])
		return func(ctx context.Context) error {
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			return ins(ctx)
		}
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v", i+1, err)
		}
	}
	for i := 1; i <= n; i++ {
		if saw[i].txid != saw[1].txid {
			t.Fatalf("callers ran in transactions %v, want one", saw)
		}
		if saw[i].tenant != "t1" {
			t.Fatalf("caller %d ran as tenant %q, want t1", i, saw[i].tenant)
		}
	}
	if saw[1].txid == holder.txid {
		t.Fatal("the queued callers shared the lane holder's transaction, which had begun before them")
	}
	// Keys were given in the reverse of arrival (caller i has key n+1-i):
	// sorted by key, caller n runs first.
	want := []int{5, 4, 3, 2, 1}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Fatalf("ran in order %v, want %v (by key)", order, want)
	}
	if got := f.values(t, context.Background(), nil); got != "0=t0,1=t1,2=t1,3=t1,4=t1,5=t1" {
		t.Fatalf("rows %q", got)
	}
	if s := f.g.Stats(); s.Groups != 1 || s.Grouped != n || s.Retried != 0 {
		t.Fatalf("stats %+v, want one group of %d", s, n)
	}
	f.inUse(t, "after the group")
}

func TestGroupNeverMixesTenants(t *testing.T) {
	f := newGroupFixture(t)
	tenants := []string{"t1", "t2", "t1", "t2"}
	saw := make([]seen, len(tenants)+1)
	_, errs := f.run(t, tenants, func(i int) func(ctx context.Context) error { return f.insert(i, 1, &saw[i]) })
	for i, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v", i+1, err)
		}
	}
	for i, tenant := range tenants {
		if saw[i+1].tenant != tenant {
			t.Fatalf("caller %d ran as tenant %q, want %q", i+1, saw[i+1].tenant, tenant)
		}
	}
	if saw[1].txid != saw[3].txid || saw[2].txid != saw[4].txid || saw[1].txid == saw[2].txid {
		t.Fatalf("transactions %v: want t1's callers in one and t2's in another", saw)
	}
	if got := f.values(t, context.Background(), nil); got != "0=t0,1=t1,2=t2,3=t1,4=t2" {
		t.Fatalf("rows %q", got)
	}
}

// One caller's failure is its own: the group rolls back and every caller
// runs again alone; the others commit, the failing one gets its error.
func TestGroupFailureRunsEachCallerAlone(t *testing.T) {
	heldCount := func(f *groupFixture, saw *seen) func(ctx context.Context) error {
		// Row 0 exists: the insert changes no row, and wanted one.
		return func(ctx context.Context) error {
			q, err := Raw(ctx)
			if err != nil {
				return err
			}
			if err := q.QueryRow(ctx, "SELECT txid_current()").Scan(&saw.txid); err != nil {
				return err
			}
			return Hold(ctx, "held:0", 1, f.q("INSERT INTO held (id, v) VALUES (0, 'again') ON CONFLICT DO NOTHING"))
		}
	}
	for _, tc := range []struct {
		name string
		who  int // the failing caller: 3 runs third of four, 1 last (keys are in reverse)
		fail func(f *groupFixture, saw *seen) func(ctx context.Context) error
		want string
	}{
		{"error", 3, func(f *groupFixture, saw *seen) func(ctx context.Context) error {
			return func(ctx context.Context) error {
				if err := f.insert(3, 1, saw)(ctx); err != nil {
					return err
				}
				return errors.New("caller 3 refuses")
			}
		}, "caller 3 refuses"},
		// Sent with the next caller's first statement.
		{"held write count", 3, heldCount, "changed 0 rows, want 1"},
		// The last caller's: sent with COMMIT, checked by Postgres, so
		// COMMIT never runs.
		{"held write count at commit", 1, heldCount, "changed 0 rows, want 1"},
		{"panic", 3, func(f *groupFixture, saw *seen) func(ctx context.Context) error {
			return func(ctx context.Context) error {
				if err := f.insert(3, 1, saw)(ctx); err != nil {
					return err
				}
				panic("caller 3 panics")
			}
		}, "recovered: caller 3 panics"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newGroupFixture(t)
			saw := make([]seen, 5)
			_, errs := f.run(t, []string{"t1", "t1", "t1", "t1"}, func(i int) func(ctx context.Context) error {
				if i == tc.who {
					return tc.fail(f, &saw[i])
				}
				return f.insert(i, 1, &saw[i])
			})
			for i, err := range errs {
				if i+1 == tc.who {
					if err == nil || !strings.Contains(err.Error(), tc.want) {
						t.Fatalf("caller %d: %v, want %q", tc.who, err, tc.want)
					}
					continue
				}
				if err != nil {
					t.Fatalf("caller %d: %v", i+1, err)
				}
			}
			want := map[int]string{3: "0=t0,1=t1,2=t1,4=t1", 1: "0=t0,2=t1,3=t1,4=t1"}[tc.who]
			if got := f.values(t, context.Background(), nil); got != want {
				t.Fatalf("rows %q, want %q", got, want)
			}
			if saw[2].txid == saw[4].txid {
				t.Fatal("callers 2 and 4 committed in one transaction after their group failed, want one each")
			}
			if s := f.g.Stats(); s.Groups != 0 || s.Retried != 4 {
				t.Fatalf("stats %+v, want no group committed and 4 callers run again", s)
			}
			f.inUse(t, "after the group")
		})
	}
}

// A caller finding a lane free runs at once, alone, as InTenant does.
func TestGroupCallerAloneRunsAtOnce(t *testing.T) {
	f := newGroupFixture(t)
	var saw seen
	if err := f.g.InTenant(viewer.SystemContext(context.Background(), "t1"), "k", f.insert(1, 1, &saw)); err != nil {
		t.Fatal(err)
	}
	if saw.tenant != "t1" {
		t.Fatalf("tenant %q", saw.tenant)
	}
	if got := f.values(t, context.Background(), nil); got != "1=t1" {
		t.Fatalf("rows %q", got)
	}
	if s := f.g.Stats(); s != (GroupStats{}) {
		t.Fatalf("stats %+v, want none", s)
	}
	if err := f.g.InTenant(context.Background(), "k", f.insert(2, 1, &saw)); err == nil {
		t.Fatal("a caller without a tenant ran")
	}
	f.inUse(t, "after the call")
}

// TestGroupMarksASecondCallerOfTheSameKey: in one group, a caller after
// another with the same key (the same run) is told so (RepeatInGroup);
// the first caller of each key is not.
func TestGroupMarksASecondCallerOfTheSameKey(t *testing.T) {
	f := newGroupFixture(t)
	release, holding := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = f.g.InTenant(viewer.SystemContext(context.Background(), "t0"), "0", func(ctx context.Context) error {
			close(holding)
			<-release
			return nil
		})
	}()
	<-holding
	keys := []string{"r1", "r2", "r1"}
	repeat := make([]bool, len(keys))
	txids := make([]int64, len(keys))
	for i, key := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := f.g.InTenant(viewer.SystemContext(context.Background(), "t1"), key, func(ctx context.Context) error {
				repeat[i] = RepeatInGroup(ctx)
				q, err := Raw(ctx)
				if err != nil {
					return err
				}
				return q.QueryRow(ctx, "SELECT txid_current()").Scan(&txids[i])
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	f.queued(t, len(keys))
	close(release)
	wg.Wait()
	if txids[0] != txids[1] || txids[1] != txids[2] {
		t.Fatalf("callers ran in transactions %v, want one group", txids)
	}
	if repeat[1] || repeat[0] == repeat[2] {
		t.Fatalf("RepeatInGroup %v for keys %v: want exactly one of the two r1 callers marked, r2 not", repeat, keys)
	}
}
