package triggers

import (
	"context"
	"fmt"
	"net/url"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"cel.dev/cel-go/cel"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluicehq/sluice/internal/definition"
)

// Trigger expressions (dedup key, filter, input mapping) are CEL over
// `headers` (lower-case names to values, repeated ones joined by ", "),
// `body` (the JSON body with the number rule of internal/definition, the
// fields of a form body, or else the body as a string) and `query` (the URL
// query, first value of each name).

const (
	exprCostLimit = 1_000_000
	exprTimeout   = 100 * time.Millisecond
	maxExprLen    = 4000
)

var (
	envOnce sync.Once
	celEnv  *cel.Env
	envErr  error
)

func env() (*cel.Env, error) {
	envOnce.Do(func() {
		celEnv, envErr = cel.NewEnv(
			cel.Variable("headers", cel.MapType(cel.StringType, cel.StringType)),
			cel.Variable("body", cel.DynType),
			cel.Variable("query", cel.MapType(cel.StringType, cel.StringType)),
		)
	})
	return celEnv, envErr
}

// program is a compiled trigger expression.
type program struct {
	prg cel.Program
}

var programs sync.Map // expression -> *program; triggers reuse a handful

// compile checks expr and returns its program; the error is safe to show.
func compile(expr string) (*program, error) {
	if p, ok := programs.Load(expr); ok {
		return p.(*program), nil
	}
	if len(expr) > maxExprLen {
		return nil, fmt.Errorf("must be at most %d characters", maxExprLen)
	}
	e, err := env()
	if err != nil {
		return nil, err
	}
	ast, iss := e.Compile(expr)
	if iss != nil && iss.Err() != nil {
		return nil, fmt.Errorf("does not compile: %s", strings.ReplaceAll(iss.Err().Error(), "\n", " "))
	}
	prg, err := e.Program(ast, cel.CostLimit(exprCostLimit), cel.InterruptCheckFrequency(100))
	if err != nil {
		return nil, fmt.Errorf("does not compile: %v", err)
	}
	p := &program{prg: prg}
	if len(expr) <= 1000 {
		programs.Store(expr, p)
	}
	return p, nil
}

// activation is what a delivery's expressions see.
type activation struct {
	vars map[string]any
}

func newActivation(headers map[string]string, query url.Values, body []byte, contentType string) activation {
	q := make(map[string]string, len(query))
	for k, v := range query {
		if len(v) > 0 {
			q[k] = v[0]
		}
	}
	return activation{vars: map[string]any{"headers": headers, "body": bodyValue(body, contentType), "query": q}}
}

func bodyValue(body []byte, contentType string) any {
	if v, err := definition.DecodeJSON(body); err == nil {
		return v
	}
	if strings.HasPrefix(contentType, "application/x-www-form-urlencoded") {
		if vals, err := url.ParseQuery(string(body)); err == nil {
			m := make(map[string]any, len(vals))
			for k, v := range vals {
				m[k] = v[0]
			}
			return m
		}
	}
	return string(body)
}

// eval runs p and returns its result as a JSON-compatible value.
func (p *program) eval(ctx context.Context, a activation) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, exprTimeout)
	defer cancel()
	out, _, err := p.prg.ContextEval(ctx, a.vars)
	if err != nil {
		return nil, err
	}
	native, err := out.ConvertToNative(reflect.TypeOf(&structpb.Value{}))
	if err != nil {
		return nil, fmt.Errorf("the result is not a JSON value: %v", err)
	}
	return definition.NormalizeJSON(native.(*structpb.Value).AsInterface()), nil
}

func (p *program) evalBool(ctx context.Context, a activation) (bool, error) {
	v, err := p.eval(ctx, a)
	if err != nil {
		return false, err
	}
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("the result is %T, not a bool", v)
	}
	return b, nil
}

func (p *program) evalString(ctx context.Context, a activation) (string, error) {
	v, err := p.eval(ctx, a)
	if err != nil {
		return "", err
	}
	switch s := v.(type) {
	case string:
		return s, nil
	case nil:
		return "", fmt.Errorf("the result is null")
	default:
		return fmt.Sprint(s), nil
	}
}

// headerMap flattens headers for expressions: lower-case names.
func headerMap(h map[string][]string) map[string]string {
	out := make(map[string]string, len(h))
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out[strings.ToLower(k)] = strings.Join(h[k], ", ")
	}
	return out
}
