package connections

// Preset is a provider's OAuth2 endpoints and habits, so that a credential
// can name the provider instead of spelling them out. Presets are data:
// adding one is adding an entry.
type Preset struct {
	AuthURL  string
	TokenURL string
	// Scopes are asked for when the credential names none.
	Scopes []string
	// ExtraParams are added to the authorization URL (a credential's own
	// extraParams win).
	ExtraParams map[string]string
	// ScopeSeparator joins scopes in requests; a space when empty.
	ScopeSeparator string
}

// Presets by the name a credential's `provider` field takes.
var Presets = map[string]Preset{
	"google": {
		AuthURL:  "https://accounts.google.com/o/oauth2/v2/auth",
		TokenURL: "https://oauth2.googleapis.com/token",
		// A refresh token only comes with offline access, and again on a
		// reconnect only with consent.
		ExtraParams: map[string]string{"access_type": "offline", "prompt": "consent"},
	},
	"microsoft": {
		AuthURL:  "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
		TokenURL: "https://login.microsoftonline.com/common/oauth2/v2.0/token",
		Scopes:   []string{"offline_access"},
	},
	"slack": {
		AuthURL:        "https://slack.com/oauth/v2/authorize",
		TokenURL:       "https://slack.com/api/oauth.v2.access",
		ScopeSeparator: ",",
	},
	"github": {
		AuthURL:  "https://github.com/login/oauth/authorize",
		TokenURL: "https://github.com/login/oauth/access_token",
	},
	"salesforce": {
		AuthURL:  "https://login.salesforce.com/services/oauth2/authorize",
		TokenURL: "https://login.salesforce.com/services/oauth2/token",
		Scopes:   []string{"api", "refresh_token"},
	},
	"hubspot": {
		AuthURL:  "https://app.hubspot.com/oauth/authorize",
		TokenURL: "https://api.hubapi.com/oauth/v1/token",
	},
}
