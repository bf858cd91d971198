package steps

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/sluicehq/sluice/internal/definition"
)

const openAIBaseURL = "https://api.openai.com/v1"

type openAIMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type openAIChatRequest struct {
	Model       string          `json:"model"`
	Messages    []openAIMessage `json:"messages"`
	MaxTokens   int             `json:"max_tokens,omitempty"`
	Temperature *float64        `json:"temperature,omitempty"`
}

// openAIRequest builds a chat completions request; the step's system
// prompt becomes a leading system message.
func openAIRequest(c *Credential, s *definition.Step, system string, msgs []definition.Message) (string, any, http.Header, *Error) {
	base, e := baseURL(c, openAIBaseURL)
	if e != nil {
		return "", nil, nil, e
	}
	body := openAIChatRequest{Model: s.Model, MaxTokens: s.MaxTokens, Temperature: s.Temperature}
	if system != "" {
		body.Messages = append(body.Messages, openAIMessage{Role: "system", Content: system})
	}
	for _, m := range msgs {
		body.Messages = append(body.Messages, openAIMessage{Role: m.Role, Content: m.Content})
	}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+c.field("apiKey"))
	if org := c.field("organization"); org != "" {
		h.Set("OpenAI-Organization", org)
	}
	return base + "/chat/completions", body, h, nil
}

type openAIChatResponse struct {
	Model   string `json:"model"`
	Choices []struct {
		Message *struct {
			Content json.RawMessage `json:"content"`
			Refusal *string         `json:"refusal"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens        int64 `json:"prompt_tokens"`
		CompletionTokens    int64 `json:"completion_tokens"`
		PromptTokensDetails *struct {
			CachedTokens int64 `json:"cached_tokens"`
		} `json:"prompt_tokens_details"`
	} `json:"usage"`
}

func parseOpenAI(body []byte) (*completion, *Error) {
	var r openAIChatResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, newError(SchemaDrift, "openai response is not a chat completion: %s", err)
	}
	if len(r.Choices) == 0 || r.Choices[0].Message == nil {
		return nil, newError(SchemaDrift, "openai response has no choices[0].message")
	}
	choice := r.Choices[0]
	text, ok := openAIContent(choice.Message.Content)
	if !ok {
		return nil, newError(SchemaDrift, "openai response choices[0].message.content is not text")
	}
	if text == "" && choice.Message.Refusal != nil {
		text = *choice.Message.Refusal
	}
	out := &completion{text: text, finishReason: choice.FinishReason, model: r.Model}
	if u := r.Usage; u != nil {
		out.inputTokens, out.outputTokens = u.PromptTokens, u.CompletionTokens
		if u.PromptTokensDetails != nil {
			out.cachedTokens = u.PromptTokensDetails.CachedTokens
		}
	}
	return out, nil
}

// openAIContent accepts a string, null, or (from some compatible servers)
// a list of {"type": "text", "text": ...} parts.
func openAIContent(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", true
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, true
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if json.Unmarshal(raw, &parts) != nil {
		return "", false
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type == "text" {
			b.WriteString(p.Text)
		}
	}
	return b.String(), true
}
