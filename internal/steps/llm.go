package steps

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/idempotency"
	"github.com/sluicehq/sluice/internal/secrets"
)

// defaultLLMTimeout applies to each call of an llm step that sets no
// timeout. It is longer than the http default because a non-streaming
// completion only answers once the whole text is generated.
const defaultLLMTimeout = 2 * time.Minute

// completion is a model response reduced to what the output and the trace
// need. inputTokens includes cachedTokens.
type completion struct {
	text, finishReason, model               string
	inputTokens, outputTokens, cachedTokens int64
	// Structured output (chat.schema set): reply is the JSON the model
	// gave (OpenAI: the message content; Anthropic: the forced tool's
	// input), nil when it gave none. content (Anthropic) is the reply's
	// content blocks and toolUseID its tool call, sent back with a
	// correction.
	reply     []byte
	content   json.RawMessage
	toolUseID string
}

// chat is one model call to build: the step's parameters, the rendered
// conversation, and, for a correction, the reply being corrected.
type chat struct {
	step   *definition.Step
	model  string
	system string
	msgs   []definition.Message
	// schemaName names the structured output (OpenAI's json_schema name,
	// Anthropic's tool); schema is the step's outputSchema, nil for text.
	schemaName string
	schema     json.RawMessage
	// correction, when set, follows the conversation with the previous
	// reply and what was wrong with it.
	correction *correction
}

type correction struct {
	prior   *completion
	problem string
}

// text is the follow-up message that sends a reply's problem
// back to the model.
func (c *correction) text() string {
	return "Your reply does not match the required JSON Schema: " + c.problem +
		". Answer again with output that matches the schema."
}

// provider is one model API: how to ask and how to read the answer.
type provider struct {
	name  string
	build func(c *Credential, r *chat) (endpoint string, body any, header http.Header, e *Error)
	parse func(body []byte, r *chat) (*completion, *Error)
}

var providers = map[string]provider{
	CredentialOpenAI:    {name: "openai", build: openAIRequest, parse: parseOpenAI},
	CredentialAnthropic: {name: "anthropic", build: anthropicRequest, parse: parseAnthropic},
}

// Fallback is one of an llm step's fallback models as the run state
// machine hands it over: the credential's name in the definition, its
// decrypted value (nil when the run's environment has no such credential)
// and the model.
type Fallback struct {
	Name       string
	Credential *Credential
	Model      string
}

// PlannedCall is a model call about to be made, for
// Request.BeforeModelCall: its provider and model, the size of its request
// (for an estimate of its input tokens), its maxTokens (0: the step sets
// none) and the calls the attempt made before it.
type PlannedCall struct {
	Provider, Model string
	RequestBytes    int
	MaxTokens       int
	Made            []Call
}

// target is one model an llm step may ask: the step's own (index 0) or a
// fallback.
type target struct {
	index      int // 0: the step's model; i: fallbacks[i-1]
	credName   string
	credential *Credential
	model      string
}

func (t target) label() string {
	if t.index == 0 {
		return t.model
	}
	return fmt.Sprintf("fallbacks[%d] %s", t.index-1, t.model)
}

// LLM runs an llm step against the provider its credential names (openai,
// for any OpenAI-compatible API, or anthropic). The output is {"text",
// "finishReason", "usage": {"inputTokens", "outputTokens",
// "cachedInputTokens"}, "model"}, and "json", the parsed reply, when the
// step has an outputSchema; usage counts every call of the attempt and
// inputTokens includes cached ones.
//
// With an outputSchema the reply must be JSON matching it: a reply that is
// not is sent back to the model once with what is wrong, and a second
// invalid reply fails with SchemaDrift. A transient failure (5xx, 408,
// timeout, connection error; 429 only on the step's last attempt, earlier
// ones retry the same model after Retry-After) moves on to the step's next
// fallback model, in order; other failures end the attempt. Every call
// made is in the Result, which is returned with the failure whenever a
// call was made.
func (x *Executor) LLM(ctx context.Context, req Request) (*Result, error) {
	s := req.Step
	if s == nil {
		return nil, newError(Permanent, "llm step is missing")
	}
	targets := []target{{credName: s.Credential, credential: req.Credential, model: s.Model}}
	for i, f := range req.Fallbacks {
		targets = append(targets, target{index: i + 1, credName: f.Name, credential: f.Credential, model: f.Model})
	}
	creds := make([]*Credential, 0, len(targets))
	for _, t := range targets {
		creds = append(creds, t.credential)
	}
	red := newRedactorFor(creds...)
	system, msgs, e := renderMessages(s, req.Env, red)
	if e != nil {
		return nil, e
	}

	res := &Result{}
	var failures []string
	for _, t := range targets {
		var out map[string]any
		out, e = x.askModel(ctx, req, t, system, msgs, red, res)
		if e == nil {
			res.Output = out
			res.Output["usage"] = attemptUsage(res.Calls)
			return res, nil
		}
		failures = append(failures, t.label()+": "+e.Message)
		if !fallsBack(req, e) {
			break
		}
	}
	if len(failures) > 1 {
		e.Message = strings.Join(failures, "; then ")
	}
	if len(res.Calls) == 0 {
		return nil, e
	}
	return res, e
}

// fallsBack reports whether a model's failure moves on to the next model:
// transient failures do, except a 429 before the step's last attempt (the
// step retries the same model after its Retry-After) and, under
// at_most_once, a failure after which the call may have been sent.
func fallsBack(req Request, e *Error) bool {
	if e.Class != Transient || e.Deferral != nil {
		return false
	}
	if req.Step.AtMostOnce() && !e.NotSent {
		return false
	}
	if e.StatusCode == http.StatusTooManyRequests && req.Attempt < req.Step.RetryPolicy().MaxAttempts {
		return false
	}
	return true
}

// askModel asks one model, with one correction of an invalid structured
// reply, and returns the step's output without its usage.
func (x *Executor) askModel(ctx context.Context, req Request, t target, system string, msgs []definition.Message, red *secrets.Redactor, res *Result) (map[string]any, *Error) {
	s := req.Step
	if t.credential == nil {
		if t.index == 0 {
			return nil, newError(Permanent, "llm step needs an openai or anthropic credential")
		}
		return nil, newError(Permanent, "credential %q is missing from the run's environment", t.credName)
	}
	p, ok := providers[t.credential.Type]
	if !ok {
		if t.index == 0 {
			return nil, newError(Permanent, "llm step needs an openai or anthropic credential")
		}
		return nil, newError(Permanent, "credential %q is a %s credential; a fallback needs an openai or anthropic one", t.credName, t.credential.Type)
	}
	if t.model == "" {
		return nil, newError(Permanent, "llm step has no model")
	}
	if e := t.credential.require("apiKey"); e != nil {
		return nil, e
	}
	r := &chat{step: s, model: t.model, system: system, msgs: msgs}
	if len(s.OutputSchema) > 0 {
		r.schemaName, r.schema = schemaName(s.ID), s.OutputSchema
	}
	for {
		out, e := x.callModel(ctx, req, p, t, r, red, res)
		if e != nil {
			return nil, e
		}
		if out.model == "" {
			out.model = t.model
		}
		output := map[string]any{
			"text":         red.String(out.text),
			"finishReason": out.finishReason,
			"model":        out.model,
		}
		if r.schema == nil {
			return output, nil
		}
		v, problem := structuredReply(out, r)
		if problem == "" {
			output["json"] = redactValue(definition.NormalizeJSON(v), red)
			return output, nil
		}
		if r.correction != nil || s.AtMostOnce() {
			msg := "the reply does not match outputSchema: " + red.String(problem)
			if r.correction != nil {
				msg = "the reply does not match outputSchema after a correction: " + red.String(problem)
			}
			e := newError(SchemaDrift, "%s", msg)
			e.StatusCode = res.Calls[len(res.Calls)-1].StatusCode
			res.Calls[len(res.Calls)-1].Error = e.Message
			return nil, e
		}
		res.Calls[len(res.Calls)-1].Error = red.String("the reply does not match outputSchema: " + problem)
		r.correction = &correction{prior: out, problem: problem}
	}
}

// callModel makes one model call and appends it to res.Calls.
func (x *Executor) callModel(ctx context.Context, req Request, p provider, t target, r *chat, red *secrets.Redactor, res *Result) (*completion, *Error) {
	s := req.Step
	endpoint, payload, header, e := p.build(t.credential, r)
	if e != nil {
		e.Message = red.String(e.Message)
		return nil, e
	}
	body, err := json.Marshal(payload)
	if err != nil {
		return nil, newError(Permanent, "encode %s request: %s", p.name, red.String(err.Error()))
	}
	if req.BeforeModelCall != nil {
		plan := PlannedCall{Provider: p.name, Model: t.model, RequestBytes: len(body), MaxTokens: s.MaxTokens, Made: append([]Call(nil), res.Calls...)}
		if err := req.BeforeModelCall(ctx, plan); err != nil {
			e := Classify(err)
			e.Message = red.String(e.Message)
			return nil, e
		}
	}
	timeout := stepTimeout(s, defaultLLMTimeout)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, newError(Permanent, "%s request: %s", p.name, red.String(err.Error()))
	}
	hreq.Header = header
	hreq.Header.Set("Content-Type", "application/json")
	if key := idempotencyKey(req); key != "" {
		hreq.Header.Set(idempotency.Header, key+callKeySuffix(t, r))
	}
	beforeSend := req.BeforeSend
	if beforeSend != nil && len(res.Calls) > 0 {
		// The attempt's send is recorded once, before its first call; a
		// later call (a fallback after a call that certainly was not sent)
		// is only kept from being replayed by the transport.
		beforeSend = func(context.Context) error { return nil }
	}

	res.Calls = append(res.Calls, Call{Kind: "llm", Provider: p.name, Model: t.model})
	call := &res.Calls[len(res.Calls)-1]
	ex, e := x.send(ctx, timeout, red, call, hreq, body, beforeSend)
	if e != nil {
		return nil, e
	}
	if ex.status < 200 || ex.status >= 300 {
		e := statusError(ex.status, ex.header, x.now(), providerErrorDetail(ex, red))
		call.Error = e.Message
		return nil, e
	}
	out, e := p.parse(ex.body, r)
	if e != nil {
		e.Message = red.String(e.Message)
		e.StatusCode = ex.status
		call.Error = e.Message
		return nil, e
	}
	if out.model != "" {
		call.Model = out.model
	}
	call.InputTokens, call.OutputTokens, call.CachedInputTokens = out.inputTokens, out.outputTokens, out.cachedTokens
	return out, nil
}

// callKeySuffix tells an attempt's calls apart in their Idempotency-Key:
// the step's model asked first carries the step's key as it is; a
// fallback and a correction, whose requests differ, carry a suffix, the
// same on every attempt.
func callKeySuffix(t target, r *chat) string {
	suffix := ""
	if t.index > 0 {
		suffix = "-fallback" + strconv.Itoa(t.index)
	}
	if r.correction != nil {
		suffix += "-correction"
	}
	return suffix
}

// schemaName names a step's structured output for the provider, which
// takes letters, digits, '_' and '-' (step ids are such).
func schemaName(stepID string) string {
	if stepID == "" {
		return "output"
	}
	return stepID
}

// structuredReply decodes and checks a structured reply; problem says what
// is wrong with it, for the model to correct.
func structuredReply(out *completion, r *chat) (any, string) {
	cut := ""
	if out.finishReason == "length" || out.finishReason == "max_tokens" {
		cut = " (the reply was cut off at maxTokens)"
	}
	if out.reply == nil {
		return nil, fmt.Sprintf("the reply did not use the %s tool", r.schemaName) + cut
	}
	dec := json.NewDecoder(bytes.NewReader(out.reply))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, "the reply is not valid JSON: " + err.Error() + cut
	}
	if dec.More() {
		return nil, "the reply is not valid JSON: unexpected data after the JSON value" + cut
	}
	err := definition.ValidateJSON(r.schema, v)
	if err == nil {
		return v, ""
	}
	var ve *definition.ValidationError
	if !errors.As(err, &ve) {
		return nil, err.Error()
	}
	const shown = 5
	parts := make([]string, 0, min(len(ve.Problems), shown))
	for i, p := range ve.Problems {
		if i == shown {
			parts = append(parts, fmt.Sprintf("and %d more", len(ve.Problems)-shown))
			break
		}
		parts = append(parts, p.String())
	}
	return nil, strings.Join(parts, "; ") + cut
}

// attemptUsage sums the tokens of an attempt's calls.
func attemptUsage(calls []Call) map[string]any {
	var in, out, cached int64
	for _, c := range calls {
		in, out, cached = in+c.InputTokens, out+c.OutputTokens, cached+c.CachedInputTokens
	}
	return map[string]any{"inputTokens": in, "outputTokens": out, "cachedInputTokens": cached}
}

// renderMessages interpolates the system prompt and every message.
func renderMessages(s *definition.Step, env definition.Env, red *secrets.Redactor) (string, []definition.Message, *Error) {
	system, err := definition.Interpolate(s.Path()+".system", s.System, env)
	if err != nil {
		return "", nil, newError(Permanent, "%s", red.String(err.Error()))
	}
	msgs := make([]definition.Message, len(s.Messages))
	for i, m := range s.Messages {
		content, err := definition.Interpolate(fmt.Sprintf("%s.messages[%d].content", s.Path(), i), m.Content, env)
		if err != nil {
			return "", nil, newError(Permanent, "%s", red.String(err.Error()))
		}
		msgs[i] = definition.Message{Role: m.Role, Content: content}
	}
	return system, msgs, nil
}

// baseURL is the credential's baseURL (trailing slashes dropped) or def.
// Only http and https are accepted; the egress client judges the host.
func baseURL(c *Credential, def string) (string, *Error) {
	b := strings.TrimRight(c.field("baseURL"), "/")
	if b == "" {
		return def, nil
	}
	u, err := url.Parse(b)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", newError(Permanent, "%s credential baseURL is not an absolute http or https URL", c.Type)
	}
	return b, nil
}

// providerErrorDetail prefers the provider's own error message (both APIs
// answer {"error": {"message": ...}}) over a raw body excerpt.
func providerErrorDetail(ex *exchange, red *secrets.Redactor) string {
	var body struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(ex.body, &body) == nil && body.Error.Message != "" {
		return capText(red.String(body.Error.Message), maxErrorDetail)
	}
	return responseDetail(ex, red)
}
