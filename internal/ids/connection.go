package ids

// Prefixes of the OAuth connection objects (internal/connections). Part of
// the public API like the others: never rename one.
const (
	Connection     = "conn"
	OAuthState     = "oas"
	CredentialWait = "cwt"
)
