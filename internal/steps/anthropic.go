package steps

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/sluicehq/sluice/internal/definition"
)

const (
	anthropicBaseURL = "https://api.anthropic.com"
	anthropicVersion = "2023-06-01"
	// anthropicMaxTokens is sent when the step sets no maxTokens: the
	// Messages API requires one.
	anthropicMaxTokens = 1024
)

type anthropicMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type anthropicRequestBody struct {
	Model       string             `json:"model"`
	MaxTokens   int                `json:"max_tokens"`
	System      string             `json:"system,omitempty"`
	Messages    []anthropicMessage `json:"messages"`
	Temperature *float64           `json:"temperature,omitempty"`
}

// anthropicRequest builds a Messages API request. The API takes only user
// and assistant turns, so system-role messages join the system prompt.
func anthropicRequest(c *Credential, s *definition.Step, system string, msgs []definition.Message) (string, any, http.Header, *Error) {
	base, e := baseURL(c, anthropicBaseURL)
	if e != nil {
		return "", nil, nil, e
	}
	endpoint := base + "/v1/messages"
	if strings.HasSuffix(base, "/v1") {
		endpoint = base + "/messages"
	}
	body := anthropicRequestBody{Model: s.Model, MaxTokens: s.MaxTokens, Temperature: s.Temperature}
	if body.MaxTokens <= 0 {
		body.MaxTokens = anthropicMaxTokens
	}
	systems := []string{}
	if system != "" {
		systems = append(systems, system)
	}
	for _, m := range msgs {
		if m.Role == "system" {
			systems = append(systems, m.Content)
			continue
		}
		body.Messages = append(body.Messages, anthropicMessage{Role: m.Role, Content: m.Content})
	}
	body.System = strings.Join(systems, "\n\n")
	h := http.Header{}
	h.Set("x-api-key", c.field("apiKey"))
	h.Set("anthropic-version", anthropicVersion)
	return endpoint, body, h, nil
}

type anthropicResponse struct {
	Model   string `json:"model"`
	Content []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	} `json:"content"`
	StopReason string `json:"stop_reason"`
	Usage      *struct {
		InputTokens              int64 `json:"input_tokens"`
		OutputTokens             int64 `json:"output_tokens"`
		CacheReadInputTokens     int64 `json:"cache_read_input_tokens"`
		CacheCreationInputTokens int64 `json:"cache_creation_input_tokens"`
	} `json:"usage"`
}

func parseAnthropic(body []byte) (*completion, *Error) {
	var r anthropicResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, newError(SchemaDrift, "anthropic response is not a message: %s", err)
	}
	if r.Content == nil {
		return nil, newError(SchemaDrift, "anthropic response has no content")
	}
	var b strings.Builder
	for _, c := range r.Content {
		if c.Type == "text" {
			b.WriteString(c.Text)
		}
	}
	out := &completion{text: b.String(), finishReason: r.StopReason, model: r.Model}
	if u := r.Usage; u != nil {
		// Anthropic's input_tokens excludes cache reads and writes; Sluice
		// counts all input, as OpenAI's prompt_tokens does.
		out.inputTokens = u.InputTokens + u.CacheReadInputTokens + u.CacheCreationInputTokens
		out.outputTokens = u.OutputTokens
		out.cachedTokens = u.CacheReadInputTokens
	}
	return out, nil
}
