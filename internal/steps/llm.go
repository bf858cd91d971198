package steps

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/idempotency"
	"github.com/sluicehq/sluice/internal/secrets"
)

// defaultLLMTimeout applies to llm steps that set no timeout. It is longer
// than the http default because a non-streaming completion only answers
// once the whole text is generated.
const defaultLLMTimeout = 2 * time.Minute

// completion is a model response reduced to what the output and the trace
// need. inputTokens includes cachedTokens.
type completion struct {
	text, finishReason, model               string
	inputTokens, outputTokens, cachedTokens int64
}

// provider is one model API: how to ask and how to read the answer.
type provider struct {
	name  string
	build func(c *Credential, s *definition.Step, system string, msgs []definition.Message) (endpoint string, body any, header http.Header, e *Error)
	parse func(body []byte) (*completion, *Error)
}

var providers = map[string]provider{
	CredentialOpenAI:    {name: "openai", build: openAIRequest, parse: parseOpenAI},
	CredentialAnthropic: {name: "anthropic", build: anthropicRequest, parse: parseAnthropic},
}

// LLM runs an llm step against the provider its credential names (openai,
// for any OpenAI-compatible API, or anthropic). The output is {"text",
// "finishReason", "usage": {"inputTokens", "outputTokens",
// "cachedInputTokens"}, "model"}; inputTokens includes cached ones. A
// failure is an *Error; the Result is returned with it whenever a call was
// made.
func (x *Executor) LLM(ctx context.Context, req Request) (*Result, error) {
	s := req.Step
	if s == nil {
		return nil, newError(Permanent, "llm step is missing")
	}
	var p provider
	var ok bool
	if req.Credential != nil {
		p, ok = providers[req.Credential.Type]
	}
	if !ok {
		return nil, newError(Permanent, "llm step needs an openai or anthropic credential")
	}
	if s.Model == "" {
		return nil, newError(Permanent, "llm step has no model")
	}
	c := req.Credential
	if e := c.require("apiKey"); e != nil {
		return nil, e
	}
	red := newRedactor(c)
	timeout := stepTimeout(s, defaultLLMTimeout)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	system, msgs, e := renderMessages(s, req.Env, red)
	if e != nil {
		return nil, e
	}
	endpoint, payload, header, e := p.build(c, s, system, msgs)
	if e != nil {
		e.Message = red.String(e.Message)
		return nil, e
	}
	body, err := json.Marshal(payload)
	if err != nil {
		return nil, newError(Permanent, "encode %s request: %s", p.name, red.String(err.Error()))
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, newError(Permanent, "%s request: %s", p.name, red.String(err.Error()))
	}
	hreq.Header = header
	hreq.Header.Set("Content-Type", "application/json")
	if key := idempotencyKey(req); key != "" {
		hreq.Header.Set(idempotency.Header, key)
	}

	res := &Result{Calls: []Call{{Kind: "llm", Provider: p.name, Model: s.Model}}}
	call := &res.Calls[0]
	ex, e := x.send(ctx, timeout, red, call, hreq, body, req.BeforeSend)
	if e != nil {
		return res, e
	}
	if ex.status < 200 || ex.status >= 300 {
		e := statusError(ex.status, ex.header, x.now(), providerErrorDetail(ex, red))
		call.Error = e.Message
		return res, e
	}
	out, e := p.parse(ex.body)
	if e != nil {
		e.Message = red.String(e.Message)
		e.StatusCode = ex.status
		call.Error = e.Message
		return res, e
	}
	if out.model == "" {
		out.model = s.Model
	}
	call.Model = out.model
	call.InputTokens, call.OutputTokens, call.CachedInputTokens = out.inputTokens, out.outputTokens, out.cachedTokens
	res.Output = map[string]any{
		"text":         red.String(out.text),
		"finishReason": out.finishReason,
		"model":        out.model,
		"usage": map[string]any{
			"inputTokens":       out.inputTokens,
			"outputTokens":      out.outputTokens,
			"cachedInputTokens": out.cachedTokens,
		},
	}
	return res, nil
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
