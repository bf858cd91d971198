package definition

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"cel.dev/cel-go/common/types"
)

// Timeout ceilings. Approvals wait for people, everything else for machines.
const (
	MaxStepTimeout     = 24 * time.Hour
	MaxApprovalTimeout = 30 * 24 * time.Hour
)

// Retry ceilings. A step's retries must end within a week whatever the
// policy says: MaxRetrySpan bounds the sum of the worst-case waits of the
// schedule (every backoff at its full, unjittered value). A server's
// Retry-After can still lengthen a wait, up to 24h each (retryafter.Max).
const (
	MaxRetryInterval      = 24 * time.Hour
	MaxBackoffCoefficient = 10.0
	MaxRetrySpan          = 7 * 24 * time.Hour
)

// ApproverRoles are the roles that can decide an approval request
// (runs.DecideApproval): owners and admins hold every role, editors and
// operators may decide when listed. A viewer cannot write, so listing
// "viewer" (or a role Sluice does not know) would open a request that no
// designated approver can ever decide.
var ApproverRoles = []string{"owner", "admin", "editor", "operator"}

// validator runs the rules the format schema cannot express. It tolerates a
// partially invalid document (missing fields, bad ids) because it also runs
// after schema problems, to report everything in one pass.
type validator struct {
	d        *Definition
	strict   bool           // apply the rules added after definitions were first stored (ParseStored)
	index    map[string]int // step id -> first step with it
	needs    [][]int        // step -> indexes of valid needs
	problems []Problem
	typing   *typing
	outputs  map[string]*shape // step id -> output shape, as steps are checked
}

func (d *Definition) validate(strict bool) []Problem {
	v := &validator{d: d, strict: strict, index: map[string]int{}, typing: newTyping(d.Input), outputs: map[string]*shape{}}
	v.checkVarDecls()
	v.checkIDs()
	v.checkNeeds()
	v.checkCycles()
	ancestors := v.ancestors()
	if len(d.Input) > 0 {
		if _, err := CompileSchema(d.Input); err != nil {
			v.add("$.input", "invalid JSON Schema: %v", err)
		}
	}
	// Dependencies first: a step's expressions are type-checked against
	// the output shapes of the steps it reads.
	for _, i := range v.checkOrder() {
		d.Steps[i].path = stepPath(i)
		if in := d.Steps[i].Step; in != nil {
			in.path = stepPath(i) + ".step" // a map step's inner step
		}
		out := v.checkStep(i, ancestors[i])
		if id := d.Steps[i].ID; id != "" && v.index[id] == i {
			v.outputs[id] = out
			v.typing.declareOutput(id, out)
		}
	}
	if d.Output != "" {
		v.checkExpr("$.output", d.Output, exprScope{output: true}, false)
	}
	v.checkConcurrency()
	d.types = definitionTypes{input: v.typing.input, outputs: v.outputs}
	return v.problems
}

// checkOrder lists step indexes in dependency order (TopoOrder), then the
// steps it leaves out (on a cycle, or with a duplicate or missing id) in
// document order.
func (v *validator) checkOrder() []int {
	order := make([]int, 0, len(v.d.Steps))
	seen := make([]bool, len(v.d.Steps))
	for _, id := range v.d.TopoOrder() {
		if i, ok := v.index[id]; ok && !seen[i] {
			seen[i] = true
			order = append(order, i)
		}
	}
	for i := range v.d.Steps {
		if !seen[i] {
			order = append(order, i)
		}
	}
	return order
}

func (v *validator) add(path, format string, args ...any) {
	v.problems = append(v.problems, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

func stepPath(i int) string { return joinIndex("$.steps", i) }

func (v *validator) checkIDs() {
	for i, s := range v.d.Steps {
		if s.ID == "" {
			continue // the schema reports it as missing
		}
		if first, dup := v.index[s.ID]; dup {
			v.add(stepPath(i)+".id", "duplicate step id %q (already used by %s)", s.ID, stepPath(first))
			continue
		}
		v.index[s.ID] = i
	}
}

func (v *validator) checkNeeds() {
	v.needs = make([][]int, len(v.d.Steps))
	for i, s := range v.d.Steps {
		for j, n := range s.Needs {
			path := joinIndex(stepPath(i)+".needs", j)
			target, ok := v.index[n]
			switch {
			case n == s.ID:
				v.add(path, "step %q cannot need itself", n)
			case !ok:
				v.add(path, "unknown step %q", n)
			default:
				if !slices.Contains(v.needs[i], target) {
					v.needs[i] = append(v.needs[i], target)
				}
			}
		}
	}
}

// checkCycles reports one cycle per strongly connected component, anchored
// at the component's first step in document order so reports are stable.
func (v *validator) checkCycles() {
	for _, comp := range v.components() {
		if len(comp) < 2 {
			continue // self needs are reported by checkNeeds
		}
		slices.Sort(comp)
		start := comp[0]
		cycle := v.cycleThrough(start, comp)
		names := make([]string, len(cycle))
		for k, i := range cycle {
			names[k] = v.d.Steps[i].ID
		}
		needIdx := slices.Index(v.d.Steps[start].Needs, v.d.Steps[cycle[1]].ID)
		v.add(joinIndex(stepPath(start)+".needs", needIdx), "cycle: %s", strings.Join(names, " -> "))
	}
}

// components is Tarjan's algorithm over the needs graph.
func (v *validator) components() [][]int {
	n := len(v.d.Steps)
	index, low := make([]int, n), make([]int, n)
	onStack := make([]bool, n)
	for i := range index {
		index[i] = -1
	}
	var stack []int
	var comps [][]int
	next := 0
	var visit func(i int)
	visit = func(i int) {
		index[i], low[i] = next, next
		next++
		stack = append(stack, i)
		onStack[i] = true
		for _, j := range v.needs[i] {
			if index[j] < 0 {
				visit(j)
				low[i] = min(low[i], low[j])
			} else if onStack[j] {
				low[i] = min(low[i], index[j])
			}
		}
		if low[i] == index[i] {
			var comp []int
			for {
				top := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				onStack[top] = false
				comp = append(comp, top)
				if top == i {
					break
				}
			}
			comps = append(comps, comp)
		}
	}
	for i := range n {
		if index[i] < 0 {
			visit(i)
		}
	}
	return comps
}

// cycleThrough finds a shortest cycle from start back to itself within one
// component, breadth first so the reported cycle is the simplest one.
func (v *validator) cycleThrough(start int, comp []int) []int {
	in := map[int]bool{}
	for _, i := range comp {
		in[i] = true
	}
	prev := map[int]int{}
	queue := []int{start}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		for _, j := range v.needs[cur] {
			if !in[j] {
				continue
			}
			if j == start {
				path := []int{start}
				for k := cur; k != start; k = prev[k] {
					path = append(path, k)
				}
				path = append(path, start)
				// path was built backwards from the closing edge.
				slices.Reverse(path[1 : len(path)-1])
				return path
			}
			if _, seen := prev[j]; !seen {
				prev[j] = cur
				queue = append(queue, j)
			}
		}
	}
	return []int{start, start}
}

// ancestors returns, per step, the ids it transitively needs: the only step
// outputs its expressions may read.
func (v *validator) ancestors() []map[string]bool {
	out := make([]map[string]bool, len(v.d.Steps))
	for i := range v.d.Steps {
		seen := map[string]bool{}
		visited := map[int]bool{i: true}
		queue := slices.Clone(v.needs[i])
		for len(queue) > 0 {
			cur := queue[0]
			queue = queue[1:]
			if visited[cur] {
				continue
			}
			visited[cur] = true
			seen[v.d.Steps[cur].ID] = true
			queue = append(queue, v.needs[cur]...)
		}
		out[i] = seen
	}
	return out
}

// exprScope says which steps an expression may reference. The zero value
// (the definition's output) may reference any step.
type exprScope struct {
	stepID    string
	restrict  bool
	ancestors map[string]bool
	output    bool // the definition's output expression
	mapItem   bool // a map step's inner step: `item` and `index` are defined
}

// checkStep checks one step and returns the shape of its output.
func (v *validator) checkStep(i int, ancestors map[string]bool) *shape {
	s := &v.d.Steps[i]
	path := stepPath(i)
	scope := exprScope{stepID: s.ID, restrict: true, ancestors: ancestors}
	out := v.checkStepBody(path, s, scope)
	if s.Type == StepMap {
		return v.checkMap(path, s, scope)
	}
	return out
}

// checkStepBody checks one step's fields and expressions, a step of the
// definition or a map step's inner step (scope.mapItem), and returns the
// shape of its output.
func (v *validator) checkStepBody(path string, s *Step, scope exprScope) *shape {

	maxTimeout := MaxStepTimeout
	switch s.Type {
	case StepApproval:
		maxTimeout = MaxApprovalTimeout
	case StepWait:
		maxTimeout = MaxWaitTimeout
		v.checkWait(path, s, scope)
	}
	if s.Timeout.Duration > maxTimeout {
		v.add(path+".timeout", "timeout %s exceeds the maximum of %s for %s steps", fmtDuration(s.Timeout.Duration), fmtDuration(maxTimeout), s.Type)
	}
	if s.Retry != nil {
		v.checkRetry(path, s)
	}
	if s.Delivery != "" && !s.SideEffect {
		v.add(path+".delivery", "delivery applies only to side-effect steps (sideEffect: true)")
	}
	v.checkCache(path, s)
	if s.OnUncertain != "" && !s.AtMostOnce() {
		v.add(path+".onUncertain", "onUncertain applies only to steps with delivery: at_most_once")
	}
	if r := s.Request; r != nil && v.strict {
		v.checkHeaders(path+".request.headers", r.Headers)
	}
	if a := s.Approvers; a != nil && v.strict {
		for j, role := range a.Roles {
			if !slices.Contains(ApproverRoles, role) {
				v.add(joinIndex(path+".approvers.roles", j), "role %q cannot decide approvals; use one of %s", role, strings.Join(ApproverRoles, ", "))
			}
		}
	}
	if s.Type == StepDelay && s.Duration.Duration > 0 && s.Until != "" {
		v.add(path+".until", "set either duration or until, not both")
	}
	if s.Expect != nil && len(s.Expect.Schema) > 0 {
		if _, err := CompileSchema(s.Expect.Schema); err != nil {
			v.add(path+".expect.schema", "invalid JSON Schema: %v", err)
		}
	}
	if len(s.OutputSchema) > 0 {
		v.checkOutputSchema(path+".outputSchema", s.OutputSchema)
	}

	if s.If != "" {
		v.checkExpr(path+".if", s.If, scope, true)
	}
	if r := s.Request; r != nil {
		v.checkTemplate(path+".request.url", r.URL, scope)
		for _, k := range sortedStringKeys(r.Headers) {
			v.checkTemplate(joinKey(path+".request.headers", k), r.Headers[k], scope)
		}
		for _, k := range sortedStringKeys(r.Query) {
			v.checkTemplate(joinKey(path+".request.query", k), r.Query[k], scope)
		}
		v.walkStrings(path+".request.body", r.Body, func(p, s string) { v.checkTemplate(p, s, scope) })
	}
	if s.System != "" {
		v.checkTemplate(path+".system", s.System, scope)
	}
	for j, m := range s.Messages {
		v.checkTemplate(joinIndex(path+".messages", j)+".content", m.Content, scope)
	}
	var transformOutput *shape
	if len(s.Output) > 0 {
		var out any
		dec := json.NewDecoder(bytes.NewReader(s.Output))
		dec.UseNumber()
		if err := dec.Decode(&out); err != nil {
			v.add(path+".output", "not valid JSON: %v", err)
		} else {
			transformOutput = v.outputShape(path+".output", out, scope)
		}
	}
	if len(s.Input) > 0 {
		v.checkChildInput(path+".input", s.Input, scope)
	}
	if s.Message != "" {
		v.checkTemplate(path+".message", s.Message, scope)
	}
	if s.Until != "" {
		v.checkExpr(path+".until", s.Until, scope, false)
	}
	switch s.Type {
	case StepTransform:
		return transformOutput
	case StepHTTP:
		return httpOutputShape(s)
	case StepLLM:
		return llmShape(s)
	case StepApproval:
		return approvalOutputShape
	case StepDelay:
		return delayOutputShape
	}
	return nil
}

// outputShape checks a transform output's expressions (its string leaves)
// and returns the output's shape: the expressions' types, the literals'.
func (v *validator) outputShape(path string, val any, scope exprScope) *shape {
	switch val := val.(type) {
	case string:
		return v.checkExpr(path, val, scope, false)
	case map[string]any:
		fields := make(map[string]*shape, len(val))
		for _, k := range sortedKeys(val) {
			if f := v.outputShape(joinKey(path, k), val[k], scope); f != nil {
				fields[k] = f
			}
		}
		return objectOf(fields)
	case []any:
		elems := make([]*shape, len(val))
		for i, e := range val {
			elems[i] = v.outputShape(joinIndex(path, i), e, scope)
		}
		return listOf(joinShapes(elems))
	}
	return literalShape(val)
}

// checkRetry bounds a retry policy: each interval, the coefficient and the
// worst-case span of the whole schedule (MaxRetrySpan).
func (v *validator) checkRetry(path string, s *Step) {
	r, p := s.Retry, s.RetryPolicy()
	path += ".retry"
	// Without strict, only the rule that predates the bounds applies.
	bounded := v.strict
	if v.strict && r.InitialInterval.Duration > MaxRetryInterval {
		v.add(path+".initialInterval", "initialInterval %s exceeds the maximum of %s", fmtDuration(r.InitialInterval.Duration), fmtDuration(MaxRetryInterval))
		bounded = false
	}
	if v.strict && r.MaxInterval.Duration > MaxRetryInterval {
		v.add(path+".maxInterval", "maxInterval %s exceeds the maximum of %s", fmtDuration(r.MaxInterval.Duration), fmtDuration(MaxRetryInterval))
		bounded = false
	}
	if v.strict && r.BackoffCoefficient > MaxBackoffCoefficient {
		v.add(path+".backoffCoefficient", "backoffCoefficient %g exceeds the maximum of %g", r.BackoffCoefficient, MaxBackoffCoefficient)
		bounded = false
	}
	if p.InitialInterval.Duration > p.MaxInterval.Duration {
		at := path + ".initialInterval"
		if r.InitialInterval.Duration == 0 {
			at = path + ".maxInterval"
		}
		v.add(at, "initialInterval %s is greater than maxInterval %s", fmtDuration(p.InitialInterval.Duration), fmtDuration(p.MaxInterval.Duration))
		bounded = false
	}
	if !bounded {
		return
	}
	if span := p.WorstCaseSpan(); span > MaxRetrySpan {
		at := path + ".maxAttempts"
		if r.MaxAttempts == 0 {
			at = path + ".maxInterval"
		}
		v.add(at, "the retry schedule can wait %s in total (maxAttempts %d, intervals up to %s); at most %s is allowed: lower maxAttempts or maxInterval",
			fmtDuration(span.Round(time.Second)), p.MaxAttempts, fmtDuration(p.MaxInterval.Duration), fmtDuration(MaxRetrySpan))
	}
}

// checkOutputSchema requires an llm step's outputSchema to compile and to
// describe an object: OpenAI's json_schema response format and Anthropic's
// tool input schema both take only an object at the root.
func (v *validator) checkOutputSchema(path string, schema json.RawMessage) {
	if !bytes.HasPrefix(bytes.TrimSpace(schema), []byte("{")) {
		return // not an object: the format schema says so
	}
	if _, err := CompileSchema(schema); err != nil {
		v.add(path, "invalid JSON Schema: %v", err)
		return
	}
	var root struct {
		Type any `json:"type"`
	}
	if json.Unmarshal(schema, &root) != nil || root.Type != "object" {
		v.add(path, `outputSchema must describe an object ("type": "object" at its root): model providers return structured output as a JSON object`)
	}
}

// checkHeaders refuses request headers that could not be sent as written
// or would split the request: names must be RFC 7230 tokens, values (as
// templates) must not hold CR, LF or NUL.
func (v *validator) checkHeaders(path string, headers map[string]string) {
	for _, k := range sortedStringKeys(headers) {
		if !validHeaderName(k) {
			v.add(path, "header name %q is not a valid HTTP header name (letters, digits and !#$%%&'*+-.^_`|~ only)", k)
			continue
		}
		if strings.ContainsAny(headers[k], "\r\n\x00") {
			v.add(joinKey(path, k), "header value must not contain CR, LF or NUL characters")
		}
	}
}

// validHeaderName reports whether name is an RFC 7230 token.
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// fmtDuration prints durations the way people write them in definitions:
// "720h0m0s" reads better as "30 days", "25h0m0s" as "25h".
func fmtDuration(d time.Duration) string {
	const day = 24 * time.Hour
	if d > day && d%day == 0 {
		return strconv.FormatInt(int64(d/day), 10) + " days"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func (v *validator) walkStrings(path string, val any, fn func(path, s string)) {
	switch val := val.(type) {
	case string:
		fn(path, val)
	case map[string]any:
		for _, k := range sortedKeys(val) {
			v.walkStrings(joinKey(path, k), val[k], fn)
		}
	case []any:
		for i, e := range val {
			v.walkStrings(joinIndex(path, i), e, fn)
		}
	}
}

func (v *validator) checkTemplate(path, tmpl string, scope exprScope) {
	segs, err := parseTemplate(tmpl)
	if err != nil {
		v.add(path, "%v", err)
		return
	}
	for _, seg := range segs {
		if seg.isExpr {
			v.checkExpr(path, seg.text, scope, false)
		}
	}
}

// checkExpr compiles an expression, checks the steps it reads and
// type-checks it; it returns the shape of its result (nil when unknown).
func (v *validator) checkExpr(path, expr string, scope exprScope, wantBool bool) *shape {
	c := compileExpr(expr)
	if c.err != nil {
		v.add(path, "invalid expression %q: %v", expr, c.err)
		return nil
	}
	if wantBool {
		if t := c.ast.OutputType(); t.Kind() != types.BoolKind && t.Kind() != types.DynKind {
			v.add(path, "expression %q must produce a bool, not %s", expr, t)
			wantBool = false
		}
	}
	out, typeErrs := v.typing.check(expr)
	// Type errors are refused at create, publish and deploy; versions
	// stored before expressions were type-checked still run (ParseStored).
	if v.strict {
		for _, msg := range typeErrs {
			v.add(path, "type error in %q: %s", truncate(expr, 200), msg)
		}
		if wantBool && out != nil && out.kind != shapeBool {
			v.add(path, "expression %q must produce a bool, not %s", expr, out.celType())
		}
	}
	if !scope.mapItem {
		v.checkMapVars(path, expr, c.ast)
	}
	v.checkEnvVarRefs(path, expr, c.ast)
	ids, dynamic := stepRefs(c.ast)
	v.d.noteOutputPaths(c.ast)
	if scope.output {
		v.d.outputReads, v.d.outputAll = ids, dynamic
	}
	if scope.stepID != "" {
		if v.d.reads == nil {
			v.d.reads = map[string][]string{}
		}
		for _, id := range ids {
			if !slices.Contains(v.d.reads[scope.stepID], id) {
				v.d.reads[scope.stepID] = append(v.d.reads[scope.stepID], id)
			}
		}
	}
	for _, id := range ids {
		_, exists := v.index[id]
		switch {
		case !exists:
			v.add(path, "unknown step %q in expression %q", id, expr)
		case scope.restrict && !scope.ancestors[id]:
			v.add(path, "step %s is not a dependency of %s; add it to needs to read its output", id, scope.stepID)
		}
	}
	if dynamic && scope.restrict {
		v.add(path, "expression %q must read steps by literal id (steps.<id>) so its dependencies can be checked", expr)
	}
	return out
}

func sortedStringKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// newValidationError orders problems by path (indexes compared numerically,
// so steps[10] follows steps[9]) and drops exact duplicates, which arise when
// the schema and a semantic rule flag the same thing.
func newValidationError(problems []Problem) *ValidationError {
	sorted := slices.Clone(problems)
	slices.SortStableFunc(sorted, func(a, b Problem) int {
		if c := comparePaths(a.Path, b.Path); c != 0 {
			return c
		}
		return strings.Compare(a.Message, b.Message)
	})
	return &ValidationError{Problems: slices.Compact(sorted)}
}

func comparePaths(a, b string) int {
	for a != "" && b != "" {
		da, db := digitPrefix(a), digitPrefix(b)
		if da > 0 && db > 0 {
			na, _ := strconv.Atoi(a[:da])
			nb, _ := strconv.Atoi(b[:db])
			if na != nb {
				return na - nb
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			return int(a[0]) - int(b[0])
		}
		a, b = a[1:], b[1:]
	}
	return len(a) - len(b)
}

func digitPrefix(s string) int {
	n := 0
	for n < len(s) && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	return n
}
