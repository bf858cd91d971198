package steps

import (
	"encoding/json"
	"net/http"
	"strings"
)

const openAIBaseURL = "https://api.openai.com/v1"

type openAIMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type openAIChatRequest struct {
	Model    string          `json:"model"`
	Messages []openAIMessage `json:"messages"`
	// max_completion_tokens, not max_tokens, which reasoning models refuse.
	MaxCompletionTokens int                   `json:"max_completion_tokens,omitempty"`
	Temperature         *float64              `json:"temperature,omitempty"`
	TopP                *float64              `json:"top_p,omitempty"`
	Stop                []string              `json:"stop,omitempty"`
	Seed                *int64                `json:"seed,omitempty"`
	ResponseFormat      *openAIResponseFormat `json:"response_format,omitempty"`
}

type openAIResponseFormat struct {
	Type       string           `json:"type"`
	JSONSchema openAIJSONSchema `json:"json_schema"`
}

type openAIJSONSchema struct {
	Name   string          `json:"name"`
	Schema json.RawMessage `json:"schema"`
	Strict bool            `json:"strict"`
}

// openAIRequest builds a chat completions request; the step's system
// prompt becomes a leading system message. An outputSchema is sent as a
// strict json_schema response format; a correction follows the
// conversation with the reply and a user message saying what is wrong.
func openAIRequest(c *Credential, r *chat) (string, any, http.Header, *Error) {
	base, e := baseURL(c, openAIBaseURL)
	if e != nil {
		return "", nil, nil, e
	}
	s := r.step
	body := openAIChatRequest{Model: r.model, MaxCompletionTokens: s.MaxTokens, Temperature: s.Temperature, TopP: s.TopP, Stop: s.Stop, Seed: s.Seed}
	if r.system != "" {
		body.Messages = append(body.Messages, openAIMessage{Role: "system", Content: r.system})
	}
	for _, m := range r.msgs {
		body.Messages = append(body.Messages, openAIMessage{Role: m.Role, Content: m.Content})
	}
	if r.schema != nil {
		body.ResponseFormat = &openAIResponseFormat{Type: "json_schema", JSONSchema: openAIJSONSchema{Name: r.schemaName, Schema: r.schema, Strict: true}}
	}
	if k := r.correction; k != nil {
		body.Messages = append(body.Messages,
			openAIMessage{Role: "assistant", Content: k.prior.text},
			openAIMessage{Role: "user", Content: k.text()})
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

func parseOpenAI(body []byte, req *chat) (*completion, *Error) {
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
	if req.schema != nil {
		out.reply = []byte(text)
	}
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
