package releasespec

import (
	"fmt"
	"math"
	"testing"
)

// TestRoutingShareAndStickiness: over 1,000 routing keys the candidate's
// share is within 5 points of the weight, and a key always lands on the
// same side.
func TestRoutingShareAndStickiness(t *testing.T) {
	for _, rel := range []string{"rel_01jfirst", "rel_01jsecond", "rel_01jthird"} {
		for _, w := range []int{1, 10, 25, 50, 90, 100} {
			n := 0
			for i := range 1000 {
				key := fmt.Sprintf("key-%d", i)
				c := Candidate(rel, key, w)
				if c {
					n++
				}
				if Candidate(rel, key, w) != c {
					t.Fatalf("%s %s: not sticky", rel, key)
				}
			}
			share := float64(n) / 10
			if math.Abs(share-float64(w)) > 5 {
				t.Errorf("%s weight %d: candidate share %.1f%%", rel, w, share)
			}
		}
	}
	// A key on the candidate at a weight stays there at every higher one.
	for i := range 1000 {
		key := fmt.Sprintf("run_%d", i)
		if Candidate("rel_x", key, 10) && !Candidate("rel_x", key, 50) {
			t.Fatalf("%s left the candidate when the weight grew", key)
		}
	}
	if Candidate("rel_x", "k", 0) {
		t.Fatal("weight 0 routed to the candidate")
	}
}

func TestWilson(t *testing.T) {
	lo, hi := Wilson(20, 20)
	if math.Abs(lo-0.8389) > 0.001 || hi != 1 {
		t.Fatalf("20/20: %f %f", lo, hi)
	}
	lo, hi = Wilson(6, 10)
	if math.Abs(lo-0.3127) > 0.001 || math.Abs(hi-0.8318) > 0.001 {
		t.Fatalf("6/10: %f %f", lo, hi)
	}
	if lo, hi = Wilson(0, 0); lo != 0 || hi != 1 {
		t.Fatalf("0/0: %f %f", lo, hi)
	}
}

func side(succeeded, n int) Side {
	s := Side{Runs: n, Succeeded: succeeded, SuccessRate: float64(succeeded) / float64(max(n, 1))}
	s.SuccessRateLower, s.SuccessRateUpper = Wilson(succeeded, n)
	return s
}

func TestJudge(t *testing.T) {
	a := Analysis{MinRunsPerSide: 10}
	if v, _ := Judge(a, side(9, 9), side(0, 9)); v != Inconclusive {
		t.Fatalf("too few runs: %s", v)
	}
	if v, _ := Judge(a, side(50, 50), side(6, 10)); v != Breach {
		t.Fatalf("40%% failures: %s", v)
	}
	if v, _ := Judge(a, side(50, 50), side(10, 10)); v != Healthy {
		t.Fatalf("healthy: %s", v)
	}
	if v, _ := Judge(a, side(49, 50), side(9, 10)); v != Healthy {
		t.Fatalf("one failure of ten: %s", v)
	}
	p := 50.0
	a.MaxP95IncreasePct = &p
	st, ca := side(50, 50), side(10, 10)
	st.P95DurationMs, ca.P95DurationMs = 100, 200
	if v, r := Judge(a, st, ca); v != Breach || len(r) != 1 {
		t.Fatalf("p95: %s %v", v, r)
	}
	a.MaxP95IncreasePct = nil
	a.MaxCostIncreasePct = &p
	st, ca = side(50, 50), side(10, 10)
	st.CostPerRun, ca.CostPerRun = 100, 140
	if v, _ := Judge(a, st, ca); v != Healthy {
		t.Fatalf("cost within: %s", v)
	}
	ca.CostPerRun = 200
	if v, _ := Judge(a, st, ca); v != Breach {
		t.Fatalf("cost over: %s", v)
	}
}
