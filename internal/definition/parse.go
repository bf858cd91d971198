// Package definition owns the workflow definition format: parsing, validation and expression evaluation.
package definition

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
)

// CurrentSchemaVersion is the only definition format version this build
// understands; documents declaring another version are rejected rather than
// half-understood.
const CurrentSchemaVersion = 1

// Step types.
const (
	StepHTTP      = "http"
	StepLLM       = "llm"
	StepTransform = "transform"
	StepApproval  = "approval"
	StepDelay     = "delay"
	StepWait      = "wait"
	StepMap       = "map"
	StepWorkflow  = "workflow"
)

// Delivery guarantees of side-effect steps (Step.Delivery).
const (
	// DeliveryAtLeastOnce (the default) sends again after a crash, under
	// the same Idempotency-Key: the receiver must deduplicate.
	DeliveryAtLeastOnce = "at_least_once"
	// DeliveryAtMostOnce records that the call may have been sent before
	// sending it and never sends it again once it may have been: a lost
	// worker or an answer-less failure ends the step as `uncertain`.
	DeliveryAtMostOnce = "at_most_once"
)

// onUncertain actions of at_most_once steps.
const (
	OnUncertainFail = "fail"
	OnUncertainAsk  = "ask"
)

// onTimeout outcomes: approve, reject or fail for approvals; fail or
// continue for waits.
const (
	OnTimeoutApprove  = "approve"
	OnTimeoutReject   = "reject"
	OnTimeoutFail     = "fail"
	OnTimeoutContinue = "continue"
)

// Definition is a validated workflow definition. Values returned by Parse are
// guaranteed to satisfy every rule in validate.go; hand-built values are not.
type Definition struct {
	SchemaVersion int             `json:"schemaVersion"`
	Input         json.RawMessage `json:"input,omitempty"` // JSON Schema of the run input
	Steps         []Step          `json:"steps"`
	Output        string          `json:"output,omitempty"` // CEL expression
	MaxCostUSD    *float64        `json:"maxCostUSD,omitempty"`
	// Vars declares the environment variables the definition reads as
	// env.vars.<name> (vars.go).
	Vars map[string]VarDecl `json:"vars,omitempty"`
	// Concurrency limits the workflow's unfinished runs per key in an
	// environment (concurrency.go).
	Concurrency *Concurrency `json:"concurrency,omitempty"`

	// reads maps a step id to the step ids its expressions read, found
	// while validating (see Reads).
	reads map[string][]string
	// outputReads: the step ids the output expression reads; outputAll:
	// it reads steps by computed id, or there is no output expression
	// (the run's output is every step's), so every step is needed.
	outputReads []string
	outputAll   bool
	// outputPaths: the output paths each step's output is read at
	// (OutputPathsRead).
	outputPaths map[string][]string
	// types: the shapes of the input and of every step's output, found
	// while validating (see InputValue, OutputValue).
	types definitionTypes
}

// OutputReads returns the ids of the steps whose outputs the run's output
// reads, and false when that is every step (no output expression, or one
// that reads steps by computed id).
func (d *Definition) OutputReads() ([]string, bool) {
	if d.Output == "" || d.outputAll {
		return nil, false
	}
	return d.outputReads, true
}

// Reads returns the ids of the steps whose outputs a step's expressions
// read. Validation guarantees they are its ancestors, so the run state machine loads
// only these outputs to evaluate the step.
func (d *Definition) Reads(stepID string) []string { return d.reads[stepID] }

// Step is one node of the workflow DAG. Which fields apply depends on Type;
// the format schema rejects fields that belong to another type.
type Step struct {
	ID         string   `json:"id"`
	Type       string   `json:"type"`
	Needs      []string `json:"needs,omitempty"`
	If         string   `json:"if,omitempty"`
	Credential string   `json:"credential,omitempty"`
	SideEffect bool     `json:"sideEffect,omitempty"`
	// Delivery is at_least_once (the default) or at_most_once, for
	// side-effect http and llm steps; OnUncertain (fail, the default, or
	// ask) is what an at_most_once step does when its call may have been
	// sent but its outcome is unknown.
	Delivery      string       `json:"delivery,omitempty"`
	OnUncertain   string       `json:"onUncertain,omitempty"`
	Timeout       Duration     `json:"timeout,omitzero"`
	LatencyBudget Duration     `json:"latencyBudget,omitzero"`
	Retry         *RetryPolicy `json:"retry,omitempty"`
	// Limit names a concurrency limit of the tenant (http and llm steps):
	// at most that many steps naming it run at once, across workflows.
	Limit string `json:"limit,omitempty"`

	// http
	Request *HTTPRequest `json:"request,omitempty"`
	Expect  *Expect      `json:"expect,omitempty"`
	// Cache, on an http step without sideEffect, serves its responses
	// from the response cache (cache.go).
	Cache *CachePolicy `json:"cache,omitempty"`

	// llm
	Model       string    `json:"model,omitempty"`
	MaxTokens   int       `json:"maxTokens,omitempty"`
	Temperature *float64  `json:"temperature,omitempty"`
	TopP        *float64  `json:"topP,omitempty"`
	Stop        StopList  `json:"stop,omitempty"`
	Seed        *int64    `json:"seed,omitempty"`
	System      string    `json:"system,omitempty"`
	Messages    []Message `json:"messages,omitempty"`
	// OutputSchema, when set, asks the model for JSON matching this JSON
	// Schema (the provider's structured output) and checks the reply
	// against it; the parsed reply is the output's "json".
	OutputSchema json.RawMessage `json:"outputSchema,omitempty"`
	// Fallbacks are tried in order when the model before them fails with
	// a transient or provider error (MaxFallbacks at most).
	Fallbacks []Fallback `json:"fallbacks,omitempty"`

	// transform: either a CEL expression string or an object/array whose
	// string leaves are CEL expressions (other leaves are literals).
	Output json.RawMessage `json:"output,omitempty"`

	// approval
	Approvers *Approvers `json:"approvers,omitempty"`
	OnTimeout string     `json:"onTimeout,omitempty"` // approve|reject|fail (approval), fail|continue (wait); empty means fail
	Message   string     `json:"message,omitempty"`   // {{ }} template shown to the operator
	// Escalation names the escalation policy whose levels fire while the
	// approval is open (internal/escalation).
	Escalation string `json:"escalation,omitempty"`

	// delay
	Duration Duration `json:"duration,omitzero"`
	Until    string   `json:"until,omitempty"` // CEL expression giving a timestamp string

	// wait: the name of the outside event it waits for, and an optional
	// CEL condition over `event` (and input, steps, run) the event must
	// meet. Its Timeout defaults to MaxWaitTimeout (see WaitTimeout).
	Event string `json:"event,omitempty"`
	Match string `json:"match,omitempty"`

	// map (mapstep.go): Items is a CEL expression giving a list; Step is
	// run once per item, with `item` and `index` in scope.
	Items         string `json:"items,omitempty"`
	Concurrency   int    `json:"concurrency,omitempty"`
	FailurePolicy string `json:"failurePolicy,omitempty"`
	Step          *Step  `json:"step,omitempty"`

	// workflow: the id of the workflow a child run runs (the version
	// deployed in the run's environment), and the child's input: an object
	// whose string leaves are CEL expressions (other leaves literals), or
	// one CEL expression giving an object.
	Workflow string          `json:"workflow,omitempty"`
	Input    json.RawMessage `json:"input,omitempty"`

	path string // $.steps[i], set by Parse
}

// Path is the step's JSON path in its definition ($.steps[2]), which
// expression errors name.
func (s *Step) Path() string {
	if s.path == "" {
		return "$.steps[?(@.id=='" + s.ID + "')]"
	}
	return s.path
}

// AtMostOnce reports whether the step's call must never be sent twice.
func (s *Step) AtMostOnce() bool { return s.Delivery == DeliveryAtMostOnce }

// UncertainAction is OnUncertain with its default applied.
func (s *Step) UncertainAction() string {
	if s.OnUncertain == "" {
		return OnUncertainFail
	}
	return s.OnUncertain
}

// TimeoutAction is OnTimeout with its default applied.
func (s *Step) TimeoutAction() string {
	if s.OnTimeout == "" {
		return OnTimeoutFail
	}
	return s.OnTimeout
}

// WaitTimeout is how long a wait step waits: its timeout, or
// MaxWaitTimeout when it sets none.
func (s *Step) WaitTimeout() time.Duration {
	if s.Timeout.Duration > 0 {
		return s.Timeout.Duration
	}
	return MaxWaitTimeout
}

// RetryPolicy controls retries of transient failures. Zero fields mean "use
// the default for the step type" (see Step.RetryPolicy).
type RetryPolicy struct {
	MaxAttempts        int      `json:"maxAttempts,omitempty"`
	InitialInterval    Duration `json:"initialInterval,omitzero"`
	MaxInterval        Duration `json:"maxInterval,omitzero"`
	BackoffCoefficient float64  `json:"backoffCoefficient,omitempty"`
}

// HTTPRequest is an http step's request. String values (url, header and
// query values, string leaves of Body) are {{ }} templates.
type HTTPRequest struct {
	Method  string            `json:"method"`
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers,omitempty"`
	Query   map[string]string `json:"query,omitempty"`
	Body    any               `json:"body,omitempty"`
}

// Expect describes an acceptable http response; a response that breaks it is
// a schema_drift failure.
type Expect struct {
	Status []int           `json:"status,omitempty"`
	Schema json.RawMessage `json:"schema,omitempty"`
}

// MaxFallbacks bounds an llm step's fallbacks.
const MaxFallbacks = 3

// Fallback is another model an llm step tries when the one before it is
// down: a credential of the run's environment (openai or anthropic) and a
// model of that provider.
type Fallback struct {
	Credential string `json:"credential"`
	Model      string `json:"model"`
}

// StopList is an llm step's stop sequences, written as one string or a
// list of strings; it always encodes as a list.
type StopList []string

// UnmarshalJSON implements json.Unmarshaler.
func (l *StopList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*l = StopList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("stop must be a string or a list of strings")
	}
	*l = many
	return nil
}

// Message is one llm chat message; Content is a {{ }} template.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Approvers lists who may decide an approval: anyone holding one of Roles or
// being one of Subjects.
type Approvers struct {
	Roles    []string `json:"roles,omitempty"`
	Subjects []string `json:"subjects,omitempty"`
}

// Duration is a time.Duration written in JSON as a Go duration string ("10s",
// "1h30m") so definitions stay readable.
type Duration struct{ time.Duration }

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.Duration.String()) }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"10s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// Problem is one validation failure, located by a JSON path such as
// $.steps[2].needs[0].
type Problem struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

func (p Problem) String() string { return p.Path + ": " + p.Message }

// ValidationError reports every problem found in a definition, ordered by
// path so the same document always yields the same report.
type ValidationError struct {
	Problems []Problem
}

func (e *ValidationError) Error() string {
	const shown = 5
	var b strings.Builder
	b.WriteString("invalid workflow definition: ")
	if len(e.Problems) > 1 {
		fmt.Fprintf(&b, "%d problems: ", len(e.Problems))
	}
	for i, p := range e.Problems {
		if i == shown {
			fmt.Fprintf(&b, "; and %d more", len(e.Problems)-shown)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.String())
	}
	return b.String()
}

// Parse decodes a definition (JSON, or YAML when the document does not start
// with '{') and validates it completely. Any failure, including a syntax
// error, is returned as *ValidationError.
func Parse(raw []byte) (*Definition, error) { return parse(raw, true) }

// ParseStored parses a definition stored by an earlier version of Sluice,
// for running it: the rules added since definitions were first published
// (bounded retry policies, header names and values, approver roles) are
// not applied, so a version published before them keeps running. Those
// rules still apply at create, publish and deploy (Parse); the run state machine
// clamps retry intervals at run time anyway (RetryPolicy.Backoff).
func ParseStored(raw []byte) (*Definition, error) { return parse(raw, false) }

func parse(raw []byte, strict bool) (*Definition, error) {
	doc, jsonDoc, err := decodeDocument(raw)
	if err != nil {
		return nil, newValidationError([]Problem{{Path: "$", Message: err.Error()}})
	}
	// A document written for another format version would produce a flood of
	// misleading schema problems, so that one problem is reported alone.
	if p, ok := checkSchemaVersion(doc); !ok {
		return nil, newValidationError([]Problem{p})
	}
	problems := schemaProblems(doc)

	var d Definition
	if err := json.Unmarshal(jsonDoc, &d); err != nil {
		// The schema normally explains why decoding failed; the raw decoder
		// error is only a fallback for what the schema cannot express.
		if len(problems) == 0 {
			problems = append(problems, Problem{Path: "$", Message: err.Error()})
		}
		return nil, newValidationError(problems)
	}
	// Semantic checks still run after schema problems when the document
	// decoded, so one round trip reports as much as possible.
	problems = append(problems, d.validate(strict)...)
	if len(problems) > 0 {
		return nil, newValidationError(problems)
	}
	return &d, nil
}

func decodeDocument(raw []byte) (doc any, jsonDoc []byte, err error) {
	trimmed := bytes.TrimSpace(bytes.TrimPrefix(raw, []byte("\xef\xbb\xbf")))
	if len(trimmed) == 0 {
		return nil, nil, errors.New("definition is empty")
	}
	jsonDoc = trimmed
	if trimmed[0] != '{' {
		jsonDoc, err = yaml.YAMLToJSON(trimmed)
		if err != nil {
			return nil, nil, fmt.Errorf("invalid YAML: %s", yaml.FormatError(err, false, false))
		}
	}
	dec := json.NewDecoder(bytes.NewReader(jsonDoc))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, nil, errors.New("invalid JSON: unexpected data after the top-level object")
	}
	return doc, jsonDoc, nil
}

func checkSchemaVersion(doc any) (Problem, bool) {
	m, ok := doc.(map[string]any)
	if !ok {
		return Problem{}, true
	}
	n, ok := m["schemaVersion"].(json.Number)
	if !ok {
		return Problem{}, true // absence and wrong type are the schema's job
	}
	if v, err := n.Float64(); err == nil && v == CurrentSchemaVersion {
		return Problem{}, true
	}
	return Problem{
		Path:    "$.schemaVersion",
		Message: fmt.Sprintf("unsupported schemaVersion %s: this version of Sluice supports schemaVersion %d", n, CurrentSchemaVersion),
	}, false
}

// Hash identifies the definition's content: the sha256 of a canonical JSON
// encoding (sorted keys, normalised numbers and durations), so formatting,
// key order and JSON-vs-YAML do not change it.
func (d *Definition) Hash() string {
	b, err := d.canonicalJSON()
	if err != nil {
		// Only hand-built definitions with malformed raw JSON get here; they
		// still hash deterministically, just not canonically.
		b = fmt.Appendf(nil, "%#v", *d)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func (d *Definition) canonicalJSON() ([]byte, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	// encoding/json writes map keys sorted, which is what makes this canonical.
	if err := enc.Encode(canonicalNumbers(v)); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// canonicalNumbers rewrites numbers so 1, 1.0 and 1e0 encode identically.
func canonicalNumbers(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			v[k] = canonicalNumbers(e)
		}
	case []any:
		for i, e := range v {
			v[i] = canonicalNumbers(e)
		}
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return json.Number(strconv.FormatInt(i, 10))
		}
		f, err := v.Float64()
		if err != nil {
			return v
		}
		if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
			return json.Number(strconv.FormatInt(int64(f), 10))
		}
		return json.Number(strconv.FormatFloat(f, 'g', -1, 64))
	}
	return v
}

// StepByID returns the step with the given id.
func (d *Definition) StepByID(id string) (*Step, bool) {
	for i := range d.Steps {
		if d.Steps[i].ID == id {
			return &d.Steps[i], true
		}
	}
	return nil, false
}

// TopoOrder returns step ids so that every step comes after all of its
// needs. Ties keep document order, so the result is deterministic. Steps on a
// cycle (impossible after Parse) are left out.
func (d *Definition) TopoOrder() []string {
	index := make(map[string]int, len(d.Steps))
	for i, s := range d.Steps {
		if _, dup := index[s.ID]; !dup {
			index[s.ID] = i
		}
	}
	pending := make([]int, len(d.Steps))
	dependents := make([][]int, len(d.Steps))
	for i, s := range d.Steps {
		for _, n := range s.Needs {
			if j, ok := index[n]; ok && j != i {
				pending[i]++
				dependents[j] = append(dependents[j], i)
			}
		}
	}
	done := make([]bool, len(d.Steps))
	order := make([]string, 0, len(d.Steps))
	// Steps are at most 1,000, so rescanning for the lowest ready index is
	// cheap and gives document-order tie breaking without a heap.
	for {
		next := -1
		for i := range d.Steps {
			if !done[i] && pending[i] == 0 {
				next = i
				break
			}
		}
		if next < 0 {
			return order
		}
		done[next] = true
		order = append(order, d.Steps[next].ID)
		for _, dep := range dependents[next] {
			pending[dep]--
		}
	}
}
