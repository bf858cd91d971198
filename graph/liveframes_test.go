package graph

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// The bounds of FrameCache: what it keeps, for how long, and what it never
// shares. The end-to-end behaviour (subscribers, selections, access) is
// tested through the API in internal/server/live_frames_test.go.

func frameKeyOf(event string, sel byte) frameKey {
	return frameKey{eventID: event, selection: [32]byte{sel}}
}

func TestFrameCacheRendersOnceForConcurrentSubscribers(t *testing.T) {
	renders := NewLiveRendersCounter()
	c := NewFrameCache(FrameCacheOptions{Renders: renders})
	release := make(chan struct{})
	var calls atomic.Int32
	// gqlgen reuses the buffer behind Data for the operation's next value:
	// the cache must keep a copy.
	buf := []byte(`{"runEvents":{"seq":1}}`)
	render := func() *graphql.Response {
		calls.Add(1)
		<-release
		return &graphql.Response{Data: buf}
	}
	const n = 20
	got := make([]string, n)
	var wg sync.WaitGroup
	started := make(chan struct{})
	wg.Go(func() {
		close(started)
		got[0] = string(c.value(context.Background(), frameKeyOf("ev1", 1), render).Data)
	})
	<-started
	// The first render is in flight once calls is 1; the others then wait
	// for it instead of rendering.
	for calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	for i := 1; i < n; i++ {
		wg.Go(func() { got[i] = string(c.value(context.Background(), frameKeyOf("ev1", 1), render).Data) })
	}
	close(release)
	wg.Wait()
	copy(buf, "XXXXXXXXXXXXXXXXXXXXXXX")
	got = append(got, string(c.value(context.Background(), frameKeyOf("ev1", 1), render).Data))
	for i, g := range got {
		if g != `{"runEvents":{"seq":1}}` {
			t.Fatalf("subscriber %d got %q", i, g)
		}
	}
	if calls.Load() != 1 {
		t.Errorf("rendered %d times, want 1", calls.Load())
	}
	if h, m := counterValue(t, renders, "hit"), counterValue(t, renders, "miss"); h != n || m != 1 {
		t.Errorf("counted %v hits, %v misses; want %d, 1", h, m, n)
	}
}

func counterValue(t *testing.T, v *prometheus.CounterVec, label string) float64 {
	t.Helper()
	var m dto.Metric
	if err := v.WithLabelValues(label).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func TestFrameCacheNeverSharesErrors(t *testing.T) {
	c := NewFrameCache(FrameCacheOptions{})
	var calls int
	failing := func() *graphql.Response {
		calls++
		return &graphql.Response{Data: []byte(`null`), Errors: gqlerror.List{{Message: "boom"}}}
	}
	for range 2 {
		if r := c.value(context.Background(), frameKeyOf("ev1", 1), failing); len(r.Errors) != 1 {
			t.Fatalf("got %+v, want the render's error", r)
		}
	}
	if calls != 2 {
		t.Errorf("a failed render was reused: %d renders for 2 values", calls)
	}
	// A stream that ended (nil) is not kept either.
	if r := c.value(context.Background(), frameKeyOf("ev2", 1), func() *graphql.Response { return nil }); r != nil {
		t.Fatalf("got %+v, want nil", r)
	}
	if _, ok := c.entries[frameKeyOf("ev2", 1)]; ok || len(c.entries) != 0 {
		t.Errorf("entries kept: %v", c.entries)
	}
}

func TestFrameCacheBounds(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewFrameCache(FrameCacheOptions{TTL: 5 * time.Second, MaxEntries: 3, MaxBytes: 100, Now: func() time.Time { return now }})
	calls := 0
	render := func(data string) func() *graphql.Response {
		return func() *graphql.Response { calls++; return &graphql.Response{Data: []byte(data)} }
	}
	get := func(ev string, sel byte, data string) string {
		return string(c.value(context.Background(), frameKeyOf(ev, sel), render(data)).Data)
	}
	// Another selection of the same event is another value.
	if get("ev1", 1, `"a"`) != `"a"` || get("ev1", 2, `"b"`) != `"b"` || get("ev1", 1, `"x"`) != `"a"` || calls != 2 {
		t.Fatalf("selections mixed up (%d renders)", calls)
	}
	// By count: the oldest goes first.
	get("ev2", 1, `"c"`)
	get("ev3", 1, `"d"`)
	if len(c.entries) != 3 {
		t.Fatalf("%d entries kept, want at most 3", len(c.entries))
	}
	if get("ev1", 1, `"a2"`) != `"a2"` {
		t.Error("the oldest entry outlived the count bound")
	}
	// By age.
	now = now.Add(6 * time.Second)
	if get("ev3", 1, `"d2"`) != `"d2"` {
		t.Error("an entry outlived its TTL")
	}
	if len(c.entries) != 1 {
		t.Errorf("%d entries after the TTL passed, want only the new one", len(c.entries))
	}
	// By bytes: a value over the whole budget is rendered and not kept.
	big := `"` + string(make([]byte, 120)) + `"`
	get("ev4", 1, big)
	if _, ok := c.entries[frameKeyOf("ev4", 1)]; ok || c.bytes > 100 {
		t.Errorf("kept %d bytes over a budget of 100", c.bytes)
	}
}
