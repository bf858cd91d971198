package definition

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/functions"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
)

// Limits on what tenant expressions may build. CEL's cost limit bounds the
// operations an expression performs, but not the size of what it builds:
// lists that alias one list (`cel.bind(l, lists.range(1000000), [l,l,l])`)
// cost a few operations and expand to millions of values once formatted,
// flattened, joined or converted to JSON. These caps bound memory and time
// whatever the expression; an expression that reaches one fails with
// ErrLimit (steps fail with class `limit`).
const (
	// MaxValues is how many values (scalars, list and map entries) one
	// expression result, or one step output, may hold.
	MaxValues = 1_000_000
	// MaxBytes is how many bytes of strings (and JSON) one expression
	// result, or one step output, may hold: 8 MiB.
	MaxBytes = 8 << 20
	// EvalTimeout bounds the time one expression may evaluate.
	EvalTimeout = 2 * time.Second
	// maxPairs bounds the element comparisons of one quadratic call
	// (sets.contains, distinct, hasAll, ...): CEL charges them after the
	// call returns, too late to stop a 10^12-comparison call.
	maxPairs = exprCostLimit
	// interruptEvery is how many comprehension iterations run between
	// checks of the evaluation deadline.
	interruptEvery = 100
)

// ErrLimit is the cause of every failure to stay within the caps above.
var ErrLimit = errors.New("limit exceeded")

// limitError is an ErrLimit with what was exceeded.
func limitError(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrLimit, fmt.Sprintf(format, args...))
}

// budget counts the values and bytes of one result or output while it is
// converted or measured; spend fails once either cap is passed.
type budget struct {
	values, bytes int
}

func (b *budget) spend(values, bytes int) error {
	b.values += values
	b.bytes += bytes
	if b.values > MaxValues {
		return limitError("more than %d values (the cap of one expression result or step output)", MaxValues)
	}
	if b.bytes > MaxBytes {
		return limitError("more than %d MiB (the cap of one expression result or step output)", MaxBytes>>20)
	}
	return nil
}

// measure walks a CEL value and spends its size on b, stopping as soon as a
// cap is passed: the walk costs at most the cap, however many times the
// value aliases one list.
func measure(v ref.Val, b *budget) error {
	switch v := v.(type) {
	case types.String:
		return b.spend(1, len(v))
	case types.Bytes:
		return b.spend(1, len(v))
	case traits.Mapper:
		if err := b.spend(1, 2); err != nil {
			return err
		}
		for it := v.Iterator(); it.HasNext() == types.True; {
			k := it.Next()
			if err := measure(k, b); err != nil {
				return err
			}
			if err := measure(v.Get(k), b); err != nil {
				return err
			}
		}
		return nil
	case traits.Lister:
		if err := b.spend(1, 2); err != nil {
			return err
		}
		for it := v.Iterator(); it.HasNext() == types.True; {
			if err := measure(it.Next(), b); err != nil {
				return err
			}
		}
		return nil
	case *types.Optional:
		if v.HasValue() {
			return measure(v.GetValue(), b)
		}
	}
	return b.spend(1, 8)
}

// withinCaps reports an ErrLimit when the arguments together exceed the
// caps: a builder (format, join, flatten, json.encode, ...) makes a result
// about as large as what it reads.
func withinCaps(args ...ref.Val) error {
	var b budget
	for _, a := range args {
		if err := measure(a, &b); err != nil {
			return err
		}
	}
	return nil
}

func sizeOf(v ref.Val) int {
	switch v := v.(type) {
	case traits.Sizer:
		if n, ok := v.Size().(types.Int); ok {
			return int(n)
		}
	}
	return 0
}

// pairsWithin refuses quadratic calls whose comparisons exceed maxPairs.
func pairsWithin(what string, a, b ref.Val) error {
	if n, m := sizeOf(a), sizeOf(b); n > 0 && m > 0 && n*m/m == n && n*m > maxPairs {
		return limitError("%s of lists of %d and %d elements compares more than %d pairs", what, n, m, maxPairs)
	}
	return nil
}

// guards are the checks run before the extension functions that build
// large results or compare all pairs, by overload id. CEL's own costs for
// these are charged after the call returns, when the memory is spent.
var guards = map[string]func(args []ref.Val) error{
	"string_format":     func(a []ref.Val) error { return withinCaps(a...) },
	"list_join":         func(a []ref.Val) error { return withinCaps(a...) },
	"list_join_string":  joinWithin,
	"list_flatten":      func(a []ref.Val) error { return withinCaps(a[0]) },
	"list_flatten_int":  func(a []ref.Val) error { return withinCaps(a[0]) },
	"json_encode_dyn":   func(a []ref.Val) error { return withinCaps(a...) },
	"yaml_encode_dyn":   func(a []ref.Val) error { return withinCaps(a...) },
	"strings_quote":     func(a []ref.Val) error { return bytesWithin(2 * len(stringArg(a[0]))) },
	"add_string":        func(a []ref.Val) error { return bytesWithin(len(stringArg(a[0])) + len(stringArg(a[1]))) },
	"add_bytes":         func(a []ref.Val) error { return bytesWithin(sizeOf(a[0]) + sizeOf(a[1])) },
	"add_list":          func(a []ref.Val) error { return valuesWithin(sizeOf(a[0]) + sizeOf(a[1])) },
	"list_distinct":     func(a []ref.Val) error { return pairsWithin("distinct", a[0], a[0]) },
	"list_hasOnly_list": func(a []ref.Val) error { return pairsWithin("hasOnly", a[0], a[1]) },
	"list_hasAny_list":  func(a []ref.Val) error { return pairsWithin("hasAny", a[0], a[1]) },
	"list_hasAll_list":  func(a []ref.Val) error { return pairsWithin("hasAll", a[0], a[1]) },
	"list_hasExactly_list": func(a []ref.Val) error {
		return pairsWithin("hasExactly", a[0], a[1])
	},
	"list_sets_contains_list":   func(a []ref.Val) error { return pairsWithin("sets.contains", a[0], a[1]) },
	"list_sets_equivalent_list": func(a []ref.Val) error { return pairsWithin("sets.equivalent", a[0], a[1]) },
	"list_sets_intersects_list": func(a []ref.Val) error { return pairsWithin("sets.intersects", a[0], a[1]) },
	"string_replace_string_string": func(a []ref.Val) error {
		return replaceWithin(a[0], a[1], a[2])
	},
	"string_replace_string_string_int": func(a []ref.Val) error {
		return replaceWithin(a[0], a[1], a[2])
	},
	"yaml_parse_string":      func(a []ref.Val) error { return bytesWithin(len(stringArg(a[0]))) },
	"yaml_parse_string_type": func(a []ref.Val) error { return bytesWithin(len(stringArg(a[0]))) },
	"json_parse_string":      func(a []ref.Val) error { return bytesWithin(len(stringArg(a[0]))) },
	"json_parse_string_type": func(a []ref.Val) error { return bytesWithin(len(stringArg(a[0]))) },
}

func stringArg(v ref.Val) string {
	s, _ := v.(types.String)
	return string(s)
}

func bytesWithin(n int) error {
	if n > MaxBytes {
		return limitError("a string of more than %d MiB", MaxBytes>>20)
	}
	return nil
}

func valuesWithin(n int) error {
	if n > MaxValues {
		return limitError("a list of more than %d values", MaxValues)
	}
	return nil
}

func joinWithin(a []ref.Val) error {
	if err := withinCaps(a[0]); err != nil {
		return err
	}
	return bytesWithin(sizeOf(a[0]) * len(stringArg(a[1])))
}

// replaceWithin bounds the result of s.replace(old, new): every occurrence
// of old (or, for an empty old, every gap between characters) becomes new.
func replaceWithin(s, old, repl ref.Val) error {
	str, o, n := stringArg(s), stringArg(old), stringArg(repl)
	if len(n) <= len(o) {
		return nil
	}
	occurrences := len(str) + 1
	if o != "" {
		occurrences = strings.Count(str, o)
	}
	if occurrences > 0 && len(n)-len(o) > (MaxBytes-len(str))/occurrences {
		return limitError("replace would build a string of more than %d MiB", MaxBytes>>20)
	}
	return nil
}

// guardedFunctions redeclares the guarded overloads of base with the same
// signatures and bindings that run their guard first.
func guardedFunctions(base *cel.Env) ([]cel.EnvOption, error) {
	var opts []cel.EnvOption
	for name, fn := range base.Functions() {
		bindings, err := fn.Bindings()
		if err != nil {
			return nil, err
		}
		byID := map[string]*functions.Overload{}
		for _, b := range bindings {
			byID[b.Operator] = b
		}
		var overloads []cel.FunctionOpt
		for _, o := range fn.OverloadDecls() {
			guard, ok := guards[o.ID()]
			b := byID[o.ID()]
			if !ok || b == nil {
				continue
			}
			call := guardedCall(guard, b)
			if o.IsMemberFunction() {
				overloads = append(overloads, cel.MemberOverload(o.ID(), o.ArgTypes(), o.ResultType(), cel.FunctionBinding(call)))
			} else {
				overloads = append(overloads, cel.Overload(o.ID(), o.ArgTypes(), o.ResultType(), cel.FunctionBinding(call)))
			}
		}
		if len(overloads) > 0 {
			opts = append(opts, cel.Function(name, overloads...))
		}
	}
	return opts, nil
}

func guardedCall(guard func([]ref.Val) error, b *functions.Overload) func(args ...ref.Val) ref.Val {
	return func(args ...ref.Val) ref.Val {
		if err := guard(args); err != nil {
			return types.WrapErr(err)
		}
		switch {
		case len(args) == 1 && b.Unary != nil:
			return b.Unary(args[0])
		case len(args) == 2 && b.Binary != nil:
			return b.Binary(args[0], args[1])
		case b.Function != nil:
			return b.Function(args...)
		}
		return types.NewErr("no binding for %s", b.Operator)
	}
}

// CEL's own MemoryLimit (aggregate element counts) is not used: its size
// calculator gives up past 10,000 nodes and reports such values as over
// any limit, which refused `size(input.items)` for a 200,000-item input.
