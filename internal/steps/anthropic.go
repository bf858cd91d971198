package steps

import (
	"encoding/json"
	"net/http"
	"strings"
)

const (
	anthropicBaseURL = "https://api.anthropic.com"
	anthropicVersion = "2023-06-01"
	// anthropicMaxTokens is sent when the step sets no maxTokens: the
	// Messages API requires one.
	anthropicMaxTokens = 1024
)

type anthropicMessage struct {
	Role string `json:"role"`
	// Content is a string or a list of content blocks.
	Content any `json:"content"`
}

type anthropicRequestBody struct {
	Model         string               `json:"model"`
	MaxTokens     int                  `json:"max_tokens"`
	System        string               `json:"system,omitempty"`
	Messages      []anthropicMessage   `json:"messages"`
	Temperature   *float64             `json:"temperature,omitempty"`
	TopP          *float64             `json:"top_p,omitempty"`
	StopSequences []string             `json:"stop_sequences,omitempty"`
	Tools         []anthropicTool      `json:"tools,omitempty"`
	ToolChoice    *anthropicToolChoice `json:"tool_choice,omitempty"`
}

type anthropicTool struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	InputSchema json.RawMessage `json:"input_schema"`
}

type anthropicToolChoice struct {
	Type string `json:"type"`
	Name string `json:"name"`
}

// anthropicRequest builds a Messages API request. The API takes only user
// and assistant turns, so system-role messages join the system prompt. It
// has no seed: a step's seed is not sent. An outputSchema becomes a tool
// whose input schema it is, and the model is made to call it; a correction
// answers that call with a tool_result error saying what is wrong.
func anthropicRequest(c *Credential, r *chat) (string, any, http.Header, *Error) {
	base, e := baseURL(c, anthropicBaseURL)
	if e != nil {
		return "", nil, nil, e
	}
	endpoint := base + "/v1/messages"
	if strings.HasSuffix(base, "/v1") {
		endpoint = base + "/messages"
	}
	s := r.step
	body := anthropicRequestBody{Model: r.model, MaxTokens: s.MaxTokens, Temperature: s.Temperature, TopP: s.TopP, StopSequences: s.Stop}
	if body.MaxTokens <= 0 {
		body.MaxTokens = anthropicMaxTokens
	}
	systems := []string{}
	if r.system != "" {
		systems = append(systems, r.system)
	}
	for _, m := range r.msgs {
		if m.Role == "system" {
			systems = append(systems, m.Content)
			continue
		}
		body.Messages = append(body.Messages, anthropicMessage{Role: m.Role, Content: m.Content})
	}
	body.System = strings.Join(systems, "\n\n")
	if r.schema != nil {
		body.Tools = []anthropicTool{{Name: r.schemaName, Description: "Give your answer as this tool's input.", InputSchema: r.schema}}
		body.ToolChoice = &anthropicToolChoice{Type: "tool", Name: r.schemaName}
	}
	if k := r.correction; k != nil {
		var said any = k.prior.content
		if len(k.prior.content) == 0 || string(k.prior.content) == "[]" {
			said = k.prior.text
		}
		var answer any = k.text()
		if k.prior.toolUseID != "" {
			answer = []any{map[string]any{"type": "tool_result", "tool_use_id": k.prior.toolUseID, "is_error": true, "content": k.text()}}
		}
		body.Messages = append(body.Messages, anthropicMessage{Role: "assistant", Content: said}, anthropicMessage{Role: "user", Content: answer})
	}
	h := http.Header{}
	h.Set("x-api-key", c.field("apiKey"))
	h.Set("anthropic-version", anthropicVersion)
	return endpoint, body, h, nil
}

type anthropicResponse struct {
	Model      string          `json:"model"`
	Content    json.RawMessage `json:"content"`
	StopReason string          `json:"stop_reason"`
	Usage      *struct {
		InputTokens              int64 `json:"input_tokens"`
		OutputTokens             int64 `json:"output_tokens"`
		CacheReadInputTokens     int64 `json:"cache_read_input_tokens"`
		CacheCreationInputTokens int64 `json:"cache_creation_input_tokens"`
	} `json:"usage"`
}

type anthropicBlock struct {
	Type  string          `json:"type"`
	Text  string          `json:"text"`
	ID    string          `json:"id"`
	Name  string          `json:"name"`
	Input json.RawMessage `json:"input"`
}

func parseAnthropic(body []byte, req *chat) (*completion, *Error) {
	var r anthropicResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, newError(SchemaDrift, "anthropic response is not a message: %s", err)
	}
	var blocks []anthropicBlock
	if len(r.Content) == 0 || string(r.Content) == "null" || json.Unmarshal(r.Content, &blocks) != nil {
		return nil, newError(SchemaDrift, "anthropic response has no content")
	}
	var b strings.Builder
	out := &completion{finishReason: r.StopReason, model: r.Model, content: r.Content}
	for _, c := range blocks {
		switch {
		case c.Type == "text":
			b.WriteString(c.Text)
		case c.Type == "tool_use" && req.schema != nil && c.Name == req.schemaName && out.reply == nil:
			out.reply, out.toolUseID = c.Input, c.ID
		}
	}
	out.text = b.String()
	if out.reply != nil {
		// The structured reply is the output's text, as with OpenAI.
		out.text = string(out.reply)
	}
	if u := r.Usage; u != nil {
		// Anthropic's input_tokens excludes cache reads and writes; Sluice
		// counts all input, as OpenAI's prompt_tokens does.
		out.inputTokens = u.InputTokens + u.CacheReadInputTokens + u.CacheCreationInputTokens
		out.outputTokens = u.OutputTokens
		out.cachedTokens = u.CacheReadInputTokens
	}
	return out, nil
}
