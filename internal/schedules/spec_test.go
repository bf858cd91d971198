package schedules

import (
	"testing"
	"time"
)

func berlin(t *testing.T) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

func times(t *testing.T, s *Spec, after string, n int) []string {
	t.Helper()
	var out []string
	for _, x := range s.Times(utc(after), n) {
		out = append(out, x.UTC().Format(time.RFC3339))
	}
	return out
}

func same(t *testing.T, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("slot %d: got %v, want %v", i, got, want)
		}
	}
}

// 2026: clocks spring forward in Berlin on 29 March at 02:00 CET (01:00
// UTC) to 03:00 CEST, and fall back on 25 October at 03:00 CEST (01:00
// UTC) to 02:00 CET.

func TestDailyInTheSkippedHourRunsAtTheEndOfTheGap(t *testing.T) {
	s, err := NewCronSpec("30 2 * * *", berlin(t), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	same(t, times(t, s, "2026-03-27T12:00:00Z", 3), []string{
		"2026-03-28T01:30:00Z", // 02:30 CET
		"2026-03-29T01:00:00Z", // 02:30 does not exist: 03:00 CEST, the first valid time
		"2026-03-30T00:30:00Z", // 02:30 CEST
	})
}

func TestDailyInTheRepeatedHourRunsOnce(t *testing.T) {
	s, err := NewCronSpec("30 2 * * *", berlin(t), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	same(t, times(t, s, "2026-10-24T12:00:00Z", 2), []string{
		"2026-10-25T00:30:00Z", // 02:30 CEST, the first of the two 02:30s; not 01:30Z again
		"2026-10-26T01:30:00Z", // 02:30 CET
	})
	// Asked from inside the repeated hour (its second pass), the 02:30
	// that already ran is not given again.
	same(t, times(t, s, "2026-10-25T01:10:00Z", 1), []string{"2026-10-26T01:30:00Z"})
}

func TestHourlyAcrossBothTransitions(t *testing.T) {
	s, err := NewCronSpec("0 * * * *", berlin(t), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Spring: 01:00 CET, then 02:00 (skipped) and 03:00 CEST are the same
	// instant, run once; then 04:00 CEST.
	same(t, times(t, s, "2026-03-28T23:30:00Z", 4), []string{
		"2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z", "2026-03-29T03:00:00Z",
	})
	// Autumn: 02:00 CEST, then 02:00 CET (repeated: not again), 03:00 CET.
	same(t, times(t, s, "2026-10-24T23:30:00Z", 3), []string{
		"2026-10-25T00:00:00Z", "2026-10-25T02:00:00Z", "2026-10-25T03:00:00Z",
	})
}

func TestSlotsInsideTheGapCollapseIntoOne(t *testing.T) {
	s, err := NewCronSpec("*/15 2 * * *", berlin(t), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	same(t, times(t, s, "2026-03-29T00:30:00Z", 2), []string{
		"2026-03-29T01:00:00Z", // 02:00, 02:15, 02:30, 02:45 do not exist: 03:00 CEST, once
		"2026-03-30T00:00:00Z", // 02:00 CEST the next day
	})
}

func TestSecondsFieldAndBounds(t *testing.T) {
	start, end := utc("2026-01-01T00:00:05Z"), utc("2026-01-01T00:00:40Z")
	s, err := NewCronSpec("*/10 * * * * *", time.UTC, &start, &end)
	if err != nil {
		t.Fatal(err)
	}
	same(t, times(t, s, "2025-12-31T00:00:00Z", 10), []string{
		"2026-01-01T00:00:10Z", "2026-01-01T00:00:20Z", "2026-01-01T00:00:30Z", "2026-01-01T00:00:40Z",
	})
}

func TestEveryWithOffset(t *testing.T) {
	s, err := NewEverySpec(time.Hour, 30*time.Minute, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	same(t, times(t, s, "2026-03-29T00:30:00Z", 3), []string{"2026-03-29T01:30:00Z", "2026-03-29T02:30:00Z", "2026-03-29T03:30:00Z"})
	if _, err := NewEverySpec(500*time.Millisecond, 0, nil, nil); err == nil {
		t.Fatal("an interval under 1s was taken")
	}
}

func TestParseRefusesWhatItDoesNotTake(t *testing.T) {
	for _, e := range []string{"", "61 * * * *", "* * *", "@every 1m", "CRON_TZ=UTC 0 * * * *", "nonsense"} {
		if _, err := ParseCron(e); err == nil {
			t.Errorf("%q was taken", e)
		}
	}
	for _, e := range []string{"0 9 * * MON-FRI", "*/5 * * * * *", "@daily"} {
		if _, err := ParseCron(e); err != nil {
			t.Errorf("%q: %v", e, err)
		}
	}
}

func TestJitterIsDeterministicAndBounded(t *testing.T) {
	slot := utc("2026-03-29T01:00:00Z")
	a, b := Jitter("sch_1", slot, time.Minute), Jitter("sch_1", slot, time.Minute)
	if a != b || a < 0 || a >= time.Minute {
		t.Fatalf("jitter %s then %s", a, b)
	}
	diff := false
	for i := range 10 {
		if Jitter("sch_1", slot.Add(time.Duration(i)*time.Hour), time.Minute) != a {
			diff = true
		}
	}
	if !diff {
		t.Fatal("the jitter does not depend on the slot")
	}
}
