package definition

import (
	"encoding/json"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"
)

// bombs are cheap-looking expressions whose results or intermediate values
// are huge: lists that alias one list, builders of long strings, quadratic
// set operations. Each must fail fast with ErrLimit, not allocate gigabytes.
var bombs = []string{
	// Ten aliases of one million-element list: 10M values once converted.
	`cel.bind(l, lists.range(1000000), cel.bind(m, [l,l,l,l,l,l,l,l,l,l], m))`,
	// The same, a hundred times over (the 7.4 GB expression of issue 10).
	`cel.bind(l, lists.range(1000000), cel.bind(m, [l,l,l,l,l,l,l,l,l,l], cel.bind(n, [m,m,m,m,m,m,m,m,m,m], n)))`,
	// Aliasing without lists.range: 10^7 values from literals.
	`cel.bind(a, [0,0,0,0,0,0,0,0,0,0], cel.bind(b, [a,a,a,a,a,a,a,a,a,a], cel.bind(c, [b,b,b,b,b,b,b,b,b,b], cel.bind(d, [c,c,c,c,c,c,c,c,c,c], cel.bind(e, [d,d,d,d,d,d,d,d,d,d], cel.bind(f, [e,e,e,e,e,e,e,e,e,e], [f,f,f,f,f,f,f,f,f,f]))))))`,
	// Formatting, joining and flattening the aliases.
	`cel.bind(l, lists.range(1000000), cel.bind(m, [l,l,l,l,l,l,l,l,l,l], size('%s'.format([m]))))`,
	`cel.bind(l, lists.range(1000000), cel.bind(m, [l,l,l,l,l,l,l,l,l,l], size(m.flatten())))`,
	`cel.bind(l, lists.range(1000000), cel.bind(m, [l,l,l,l,l,l,l,l,l,l], cel.bind(n, [m,m,m,m,m,m,m,m,m,m], size(n.flatten(2)))))`,
	`cel.bind(s, lists.range(100000).map(x, 'aaaaaaaaaa').join(''), size([s,s,s,s,s,s,s,s,s,s].join('')))`,
	// A map of aliases.
	`cel.bind(l, lists.range(1000000), {'a': l, 'b': l, 'c': l, 'd': l})`,
	// Quadratic set operations on a large list.
	`cel.bind(l, lists.range(1000000), sets.contains(l, l))`,
	`cel.bind(l, lists.range(200000), sets.equivalent(l, l))`,
	`cel.bind(l, lists.range(200000), sets.intersects(l, l.map(x, -1)))`,
	// A string replaced into itself: its length squared.
	`cel.bind(s, lists.range(300000).map(x, 'a').join(''), size(s.replace('a', s)))`,
	// Long strings built over and over in a comprehension.
	`cel.bind(s, lists.range(800000).map(x, 'abcdefghij').join(''), lists.range(1000).map(x, s + string(x)))`,
	// Doubling a string with binds.
	`cel.bind(a, lists.range(100000).map(x, 'abcdefghij').join(''), cel.bind(b, a+a+a+a+a+a+a+a+a+a, cel.bind(c, b+b+b+b+b+b+b+b+b+b, size(c+c+c+c+c+c+c+c+c+c))))`,
}

// Each bomb is refused with ErrLimit having allocated far less than it
// asks for (gigabytes). How fast is measured by the benchmark
// (BenchmarkWorstExpression), not here: a loaded machine slows any
// evaluation; the wait below only catches one that never ends.
func TestEvalBombsFailFast(t *testing.T) {
	const maxAlloc = 1 << 30
	for _, expr := range bombs {
		t.Run(truncate(expr, 60), func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			done := make(chan error, 1)
			go func() {
				_, err := Eval("$.x", expr, Env{})
				done <- err
			}()
			select {
			case err := <-done:
				runtime.ReadMemStats(&after)
				if !errors.Is(err, ErrLimit) {
					t.Fatalf("err = %v, want ErrLimit", err)
				}
				if alloc := after.TotalAlloc - before.TotalAlloc; alloc > maxAlloc {
					t.Errorf("allocated %d MiB before it was refused, want under %d MiB", alloc>>20, maxAlloc>>20)
				}
			case <-time.After(2 * time.Minute):
				t.Fatal("still evaluating after 2 minutes")
			}
		})
	}
}

func TestInterpolateAndOutputBombsFailFast(t *testing.T) {
	alias := `cel.bind(l, lists.range(1000000), cel.bind(m, [l,l,l,l,l,l,l,l,l,l], m))`
	if _, err := Interpolate("$.x", "x {{ "+alias+" }} y", Env{}); !errors.Is(err, ErrLimit) {
		t.Errorf("Interpolate: err = %v, want ErrLimit", err)
	}
	raw, _ := json.Marshal(map[string]any{"a": alias, "b": []any{alias}})
	if _, err := EvalOutput("$.x", raw, Env{}); !errors.Is(err, ErrLimit) {
		t.Errorf("EvalOutput: err = %v, want ErrLimit", err)
	}
	if _, err := EvalBool("$.x", "size("+alias+") > 0", Env{}); err != nil {
		t.Errorf("size of an alias list is cheap and fine: %v", err)
	}
}

// Each leaf of an output is under the caps, together they are not: the
// caps are per step output, not per expression.
func TestEvalOutputCapIsPerOutput(t *testing.T) {
	leaf := `lists.range(300000).map(x, 'abcdefghijklmnopqrstuvwxyz').join('')` // 7.8 MB
	raw, _ := json.Marshal(map[string]any{"a": leaf, "b": leaf})
	_, err := EvalOutput("$.x", raw, Env{})
	if !errors.Is(err, ErrLimit) {
		t.Fatalf("err = %v, want ErrLimit", err)
	}
	if !strings.Contains(err.Error(), "MiB") {
		t.Errorf("message %q should name the cap", err)
	}
}

// Reasonable expressions stay well within the caps.
func TestEvalWithinCaps(t *testing.T) {
	for _, expr := range []string{
		`lists.range(1000).map(x, x * 2).filter(x, x % 3 == 0).size()`,
		`lists.range(100000).size()`,
		`'%s-%d'.format(['a', 1])`,
		`[[1,2],[3,[4]]].flatten()`,
		`['a','b','c'].join(',')`,
		`sets.contains([1,2,3], [2])`,
		`'abc'.replace('b', 'xyz')`,
	} {
		if _, err := Eval("$.x", expr, Env{}); err != nil {
			t.Errorf("%s: %v", expr, err)
		}
	}
	// Large input data passes through without being copied into CEL.
	big := make([]any, 200000)
	for i := range big {
		big[i] = int64(i)
	}
	if v, err := Eval("$.x", "size(input.items)", Env{Input: map[string]any{"items": big}}); err != nil || v != int64(200000) {
		t.Errorf("size(input.items) = %v, %v", v, err)
	}
}

// BenchmarkWorstExpression reports the bytes allocated by evaluating each
// of the worst expressions known (each refused by a cap); the largest, as
// MiB/worst-expr, is the figure in BENCHMARKS.md.
func BenchmarkWorstExpression(b *testing.B) {
	var worst float64
	var worstExpr string
	for b.Loop() {
		for _, expr := range bombs {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			_, _ = Eval("$.x", expr, Env{})
			took := time.Since(start)
			runtime.ReadMemStats(&after)
			per := float64(after.TotalAlloc - before.TotalAlloc)
			if b.N == 1 || per > worst {
				b.Logf("%7.1f MiB %6.0f ms  %s", per/(1<<20), float64(took.Microseconds())/1e3, truncate(expr, 110))
			}
			if per > worst {
				worst, worstExpr = per, expr
			}
		}
	}
	b.ReportMetric(worst/(1<<20), "MiB/worst-expr")
	b.Logf("worst: %.1f MiB allocated by %s", worst/(1<<20), worstExpr)
}
