package bench

import (
	"context"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var s Sample
	for i := 100; i >= 1; i-- {
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	for q, want := range map[float64]time.Duration{0.5: 50 * time.Millisecond, 0.95: 95 * time.Millisecond, 0.99: 99 * time.Millisecond, 1: 100 * time.Millisecond, 0: time.Millisecond} {
		if got := s.Percentile(q); got != want {
			t.Errorf("p%v = %s, want %s", q*100, got, want)
		}
	}
	if s[0] != 100*time.Millisecond {
		t.Error("Percentile sorted the sample in place")
	}
	if (Sample{}).Median() != 0 {
		t.Error("empty sample: want 0")
	}
}

func TestSteadyRate(t *testing.T) {
	begin := time.Now()
	var finished []time.Time
	// 100 completions 10ms apart: 100/s, whatever the slow tail does.
	for i := range 100 {
		finished = append(finished, begin.Add(time.Duration(i)*10*time.Millisecond))
	}
	finished = append(finished, begin.Add(10*time.Second))
	if got := steadyRate(finished); math.Abs(got-100) > 1 {
		t.Errorf("steadyRate = %.2f/s, want 100/s", got)
	}
	if steadyRate(finished[:1]) != 0 {
		t.Error("one completion: want 0")
	}
}

func TestStepCap(t *testing.T) {
	err := errors.New(`createWorkflowVersion: {"errors":[{"message":"invalid workflow definition: $.steps: maxItems: got 1,000, want 500"}]}`)
	if n, ok := stepCap(err); !ok || n != 500 {
		t.Errorf("stepCap = %d, %v; want 500, true", n, ok)
	}
	for _, err := range []error{nil, errors.New("connection refused"), errors.New("$.input: maxItems: got 3, want 2")} {
		if _, ok := stepCap(err); ok {
			t.Errorf("stepCap(%v): want false", err)
		}
	}
}

func TestReportPrint(t *testing.T) {
	r := &Report{Targets: true, Runs: 3, Succeeded: 3, Figures: []Figure{
		{Scenario: "3-step", Name: "latency p50", Value: 12.5, Unit: "ms", Goal: atMost(20, "ms")},
		{Scenario: "3-step", Name: "steps/s vs asynq", Value: 10, Unit: "%", Goal: atLeast(40, "%")},
		{Scenario: "fan-out", Name: "1000 steps (not expressible)", Value: math.NaN(), Unit: "s", Goal: atMost(2, "s")},
		{Scenario: "memory", Name: "peak RSS", Value: 80, Unit: "MiB"},
	}}
	var b strings.Builder
	r.Print(&b)
	out := b.String()
	for _, want := range []string{
		"12.5 ms", "<= 20.0 ms", "0.62x", "PASS",
		"10.0 %", ">= 40.0 %", "0.25x", "MISS",
		"n/a", "80.0 MiB",
		"runs: 3 started, 3 succeeded; targets missed: 2",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if r.Missed() != 2 {
		t.Errorf("Missed = %d, want 2", r.Missed())
	}
}

func TestPeakRSS(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc")
	}
	n, err := PeakRSS(os.Getpid())
	if err != nil || n <= 0 {
		t.Fatalf("PeakRSS = %d, %v", n, err)
	}
	if _, err := PeakRSS(-1); err == nil {
		t.Error("PeakRSS(-1): want an error")
	}
}

// TestPeersUnavailable: without the peer's sources the peers scenario
// reports n/a with the reason and does not fail the benchmark.
func TestPeersUnavailable(t *testing.T) {
	for dir, reason := range map[string]string{
		"":                                    "no peer sources",
		filepath.Join(t.TempDir(), "missing"): "no peer module at",
	} {
		s := &session{t: Target{PeersDir: dir}, o: Options{Progress: io.Discard}, report: &Report{}}
		if err := s.peers(context.Background()); err != nil {
			t.Fatalf("PeersDir %q: %v", dir, err)
		}
		if len(s.report.Figures) != 1 {
			t.Fatalf("PeersDir %q: want one figure, got %+v", dir, s.report.Figures)
		}
		f := s.report.Figures[0]
		if f.Scenario != ScenarioPeers || !math.IsNaN(f.Value) || !strings.Contains(f.Name, "n/a: "+reason) {
			t.Errorf("PeersDir %q: got %+v, want n/a naming %q", dir, f, reason)
		}
	}
}

func TestRatio(t *testing.T) {
	if got := ratio(3, 4); got != 0.75 {
		t.Errorf("ratio(3, 4) = %v", got)
	}
	if !math.IsNaN(ratio(3, 0)) {
		t.Error("ratio(3, 0): want NaN")
	}
}

// TestAnonPeaks: the sampler reports a process's anonymous memory, which
// grows with what it holds, and skips a pid it cannot read.
func TestAnonPeaks(t *testing.T) {
	if _, err := anonRSS(os.Getpid()); err != nil {
		t.Skipf("no /proc status here: %v", err)
	}
	before, err := anonRSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	stop := anonPeaks(context.Background(), []int{os.Getpid(), math.MaxInt32})
	held := make([]byte, 64<<20) // touched: resident and anonymous
	for i := range held {
		held[i] = 1
	}
	peaks := stop()
	if held[len(held)-1] != 1 {
		t.Fatal("unreachable")
	}
	if got := peaks[os.Getpid()]; got < before+60<<20 {
		t.Errorf("peak %d MiB after holding 64 MiB more than %d MiB", got>>20, before>>20)
	}
	if _, ok := peaks[math.MaxInt32]; ok {
		t.Error("a peak for a pid that does not exist")
	}
	if _, err := statusKB([]byte("VmHWM:\t  1024 kB\nRssAnon:\t 512 kB\n"), "RssAnon:"); err != nil {
		t.Error(err)
	}
	if n, _ := statusKB([]byte("RssAnon:\t 512 kB\n"), "RssAnon:"); n != 512<<10 {
		t.Errorf("RssAnon 512 kB read as %d bytes", n)
	}
	if _, err := statusKB([]byte("RssAnon: 512 MB\n"), "RssAnon:"); err == nil {
		t.Error("a line in another unit was accepted")
	}
}
