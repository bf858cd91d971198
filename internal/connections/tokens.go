package connections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/connection"
	"github.com/sluicehq/sluice/internal/backoff"
	"github.com/sluicehq/sluice/internal/steps"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// tokenSet is what a connection's sealed tokens hold.
type tokenSet struct {
	AccessToken  string    `json:"access_token,omitempty"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	TokenType    string    `json:"token_type,omitempty"`
	Expiry       time.Time `json:"expiry,omitzero"`
	// raw is the provider's answer, for its extra fields (granted scope,
	// account); never stored.
	raw *oauth2.Token
}

// failureBackoff spaces the refreshes of a degraded connection.
var failureBackoff = backoff.Exponential{Initial: 30 * time.Second, Max: 30 * time.Minute, Coefficient: 2}

// refreshTimeout bounds one token request (the row stays locked meanwhile).
const refreshTimeout = 30 * time.Second

// lockWait bounds how long a refresh waits for the connection's row lock
// (another worker refreshing) on top of its own token request.
const lockWait = 30 * time.Second

// needsPerson reports whether a connection in status st can give no token
// until someone authorizes it.
func needsPerson(st connection.Status) bool {
	switch st {
	case connection.StatusPendingAuthorization, connection.StatusReauthorizationRequired, connection.StatusDisabled:
		return true
	}
	return false
}

// NeedsPerson is needsPerson for a status string (the run state machine's
// check before it runs a step).
func NeedsPerson(status string) bool { return needsPerson(connection.Status(status)) }

// usable reports whether an access token may still be sent at now: it has
// not expired, with a margin of a quarter of its lifetime up to 30s (a
// token that expires in flight is refused by the API).
func usable(ts tokenSet, rejected string, refreshedAt *time.Time, now time.Time) bool {
	if ts.AccessToken == "" || ts.AccessToken == rejected {
		return false
	}
	if ts.Expiry.IsZero() {
		return true // no known expiry: until the API answers 401
	}
	margin := 30 * time.Second
	if refreshedAt != nil {
		if q := ts.Expiry.Sub(*refreshedAt) / 4; q < margin {
			margin = q
		}
	}
	return now.Before(ts.Expiry.Add(-margin))
}

// nextRefresh is when a token that expires at expiry (issued at issued)
// is refreshed ahead: at the later of 5 minutes or 10% of its lifetime
// before expiry (so a short-lived token is not refreshed at once after it
// was issued), and within idle at the latest.
func nextRefresh(expiry, issued, now time.Time, idle time.Duration) time.Time {
	latest := now.Add(idle)
	if expiry.IsZero() {
		return latest
	}
	lead := min(5*time.Minute, expiry.Sub(issued)/10)
	at := expiry.Add(-lead)
	if at.Before(now) {
		at = now
	}
	if at.After(latest) {
		at = latest
	}
	return at
}

// Source returns the token source of the connection of credential
// credentialID in tenant tenantID, for the steps executor.
func (s *Service) Source(tenantID, credentialID string) steps.TokenSource {
	return source{s: s, tenantID: tenantID, credentialID: credentialID}
}

type source struct {
	s                      *Service
	tenantID, credentialID string
}

func (src source) AccessToken(ctx context.Context, rejected string) (string, error) {
	return src.s.accessToken(ctx, src.tenantID, src.credentialID, rejected)
}

func cacheKey(tenantID, credentialID string) string { return tenantID + "/" + credentialID }

// accessToken returns a usable access token: from memory until it
// expires, else from the row, else by refreshing (refresh).
func (s *Service) accessToken(ctx context.Context, tenantID, credentialID, rejected string) (string, error) {
	key := cacheKey(tenantID, credentialID)
	now := s.o.Now()
	if t, ok := s.cache.get(key); ok && t.access != rejected && now.Before(t.expiry) {
		return t.access, nil
	}
	ctx = viewer.SystemContext(ctx, tenantID)
	var token string
	var version int
	err := store.InTenant(ctx, s.o.Client, func(ctx context.Context) error {
		c := ent.FromContext(ctx)
		row, err := c.Connection.Query().Where(connection.CredentialID(credentialID)).Only(ctx)
		if err != nil {
			return fmt.Errorf("read connection: %w", err)
		}
		if needsPerson(row.Status) {
			return steps.ErrNeedsAuthorization
		}
		version = row.TokenVersion
		ts, err := s.openTokens(ctx, c, row)
		if err != nil {
			return err
		}
		if usable(ts, rejected, row.LastRefreshedAt, now) {
			token = ts.AccessToken
			s.remember(key, ts, row.LastRefreshedAt, row.TokenVersion)
		}
		return nil
	})
	if err != nil || token != "" {
		return token, err
	}
	return s.refresh(ctx, tenantID, credentialID, version, rejected, false)
}

// remember caches an access token until its margin before expiry.
func (s *Service) remember(key string, ts tokenSet, refreshedAt *time.Time, version int) {
	until := ts.Expiry
	if until.IsZero() {
		until = s.o.Now().Add(5 * time.Minute) // re-read now and then
	} else if refreshedAt != nil {
		until = until.Add(-min(30*time.Second, ts.Expiry.Sub(*refreshedAt)/4))
	}
	s.cache.put(key, cachedToken{access: ts.AccessToken, expiry: until, version: version})
}

func (s *Service) openTokens(ctx context.Context, c *ent.Client, row *ent.Connection) (tokenSet, error) {
	var ts tokenSet
	if len(row.Tokens) == 0 {
		return ts, nil
	}
	plain, err := s.o.Vault.OpenConnectionTokens(ctx, c, row.CredentialID, row.TokenVersion, row.Tokens)
	if err != nil {
		return ts, fmt.Errorf("open connection tokens: %w", err)
	}
	defer clear(plain)
	if err := json.Unmarshal(plain, &ts); err != nil {
		return ts, fmt.Errorf("decode connection tokens: %w", err)
	}
	return ts, nil
}

// refresh gets new tokens from the provider with the connection's row
// locked, so that one worker at a time refreshes it. After the lock it
// reads the row again: when its token version is no longer seenVersion,
// another worker refreshed meanwhile, and its token is used (a rotated
// refresh token must never be sent twice). keepAlive (the sweep) refreshes
// a usable token too, but not one another worker just refreshed. New
// tokens are sealed and written in the same transaction; a failure moves
// the connection to degraded or reauthorization_required.
func (s *Service) refresh(ctx context.Context, tenantID, credentialID string, seenVersion int, rejected string, keepAlive bool) (string, error) {
	// A refresh, once asked for, runs to its commit even when the step that
	// asked gives up (its timeout, a cancelled run): a provider that rotates
	// refresh tokens has consumed the old one as soon as it answers, and a
	// transaction rolled back then would keep a dead refresh token, whose
	// next use is invalid_grant and a person to re-authorize.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refreshTimeout+lockWait)
	defer cancel()
	ctx = viewer.SystemContext(ctx, tenantID)
	var token string
	var result error
	err := store.InTenant(ctx, s.o.Client, func(ctx context.Context) error {
		token, result = "", nil
		c := ent.FromContext(ctx)
		row, err := c.Connection.Query().Where(connection.CredentialID(credentialID)).ForUpdate().Only(ctx)
		if err != nil {
			return fmt.Errorf("lock connection: %w", err)
		}
		if needsPerson(row.Status) {
			result = steps.ErrNeedsAuthorization
			return nil
		}
		now := s.o.Now()
		ts, err := s.openTokens(ctx, c, row)
		if err != nil {
			return err
		}
		if row.TokenVersion != seenVersion {
			// Another worker refreshed while this one waited for the lock.
			if keepAlive || usable(ts, rejected, row.LastRefreshedAt, now) {
				token = ts.AccessToken
				return nil
			}
		}
		st, err := s.settingsOf(ctx, c, credentialID)
		if err != nil {
			return err
		}
		next, err := s.requestToken(ctx, st, ts)
		if err != nil {
			if usable(ts, rejected, row.LastRefreshedAt, now) && !errors.Is(err, errReauthorize) {
				// A keep-alive failed but the token still works: record
				// the failure, keep serving the token.
				token = ts.AccessToken
			}
			result = s.recordFailure(ctx, c, row, err, now)
			if token != "" && !errors.Is(result, steps.ErrNeedsAuthorization) {
				result = nil
			}
			return nil
		}
		if err := s.storeTokens(ctx, c, row, next, "refresh", now); err != nil {
			return err
		}
		token = next.AccessToken
		return nil
	})
	if err != nil {
		return "", err
	}
	if result != nil {
		s.cache.drop(cacheKey(tenantID, credentialID))
		return "", result
	}
	return token, nil
}

// errReauthorize marks a provider answer that only a person can fix.
var errReauthorize = errors.New("the provider refused the grant")

// providerError is a token endpoint failure, safe to store and show: the
// provider's error code, never its body (it may echo what was sent).
type providerError struct {
	msg       string
	reauth    bool
	transient bool
}

func (e *providerError) Error() string { return e.msg }
func (e *providerError) Is(target error) bool {
	return target == errReauthorize && e.reauth
}

// classify turns a token request's failure into a providerError.
func classify(ctx context.Context, err error) *providerError {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		code := re.ErrorCode
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		msg := fmt.Sprintf("token endpoint answered %d", status)
		if code != "" {
			msg += " (" + code + ")"
		}
		switch {
		case code == "invalid_grant":
			return &providerError{msg: msg, reauth: true}
		case status == 429 || status >= 500 || status == 0:
			return &providerError{msg: msg, transient: true}
		default:
			return &providerError{msg: msg}
		}
	}
	if ctx.Err() != nil {
		return &providerError{msg: "token request: " + ctx.Err().Error(), transient: true}
	}
	msg := err.Error()
	if i := strings.Index(msg, "?"); i > 0 {
		msg = msg[:i] // never a query string
	}
	return &providerError{msg: "token request: " + msg, transient: true}
}

// requestToken asks the provider for new tokens: the refresh-token grant
// with the stored (or initial) refresh token, or client credentials.
func (s *Service) requestToken(ctx context.Context, st Settings, cur tokenSet) (tokenSet, error) {
	ctx, cancel := context.WithTimeout(ctx, refreshTimeout)
	defer cancel()
	ctx = context.WithValue(ctx, oauth2.HTTPClient, s.o.HTTP)
	var tok *oauth2.Token
	var err error
	if st.Grant == GrantClientCredentials {
		conf := &clientcredentials.Config{ClientID: st.ClientID, ClientSecret: st.ClientSecret, TokenURL: st.TokenURL,
			Scopes: st.scopeParam(), AuthStyle: oauth2.AuthStyleInParams}
		tok, err = conf.Token(ctx)
	} else {
		rt := cur.RefreshToken
		if rt == "" {
			rt = st.RefreshToken
		}
		if rt == "" {
			return tokenSet{}, &providerError{msg: "no refresh token: authorize the connection", reauth: true}
		}
		tok, err = st.config("").TokenSource(ctx, &oauth2.Token{RefreshToken: rt}).Token()
		if err == nil && tok.RefreshToken == "" {
			tok.RefreshToken = rt // the provider did not rotate it
		}
	}
	if err != nil {
		return tokenSet{}, classify(ctx, err)
	}
	return tokenSet{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, TokenType: tok.TokenType, Expiry: tok.Expiry.UTC(), raw: tok}, nil
}
