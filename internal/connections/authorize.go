package connections

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/connection"
	"github.com/sluicehq/sluice/ent/credential"
	"github.com/sluicehq/sluice/ent/oauthstate"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// CallbackPath is where providers send the user back (served by the API).
const CallbackPath = "/oauth/callback"

// Authorization is a begun authorization: the URL to send the user to.
type Authorization struct {
	URL       string
	ExpiresAt time.Time
}

// hashState is how a state is looked up: the state itself is never stored.
func hashState(state string) string {
	h := sha256.Sum256([]byte(state))
	return hex.EncodeToString(h[:])
}

// verifier is the PKCE code verifier of a state: derived from the tenant's
// key and the state, so it is never stored.
func (s *Service) verifier(ctx context.Context, c *ent.Client, state string) (string, error) {
	key, err := s.o.Vault.ConnectionKey(ctx, c)
	if err != nil {
		return "", err
	}
	defer clear(key)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(state))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil)), nil
}

// credentialOf returns an oauth2 credential the viewer may see and its
// connection, or NOT_FOUND.
func credentialOf(ctx context.Context, c *ent.Client, v *viewer.Viewer, id string) (*ent.Credential, *ent.Connection, error) {
	cred, err := c.Credential.Get(ctx, id)
	if ent.IsNotFound(err) || (err == nil && !access.InScope(v, cred.EnvironmentID)) {
		return nil, nil, notFound(id)
	}
	if err != nil {
		return nil, nil, err
	}
	if cred.Type != credential.TypeOauth2 {
		return nil, nil, errs.Invalid("input.credentialID", "credential %s is of type %s, not oauth2", id, cred.Type)
	}
	row, err := c.Connection.Query().Where(connection.CredentialID(id)).Only(ctx)
	if ent.IsNotFound(err) {
		return nil, nil, errs.Invalid("input.credentialID", "credential %s has no connection: rotate it to give it one", id)
	}
	return cred, row, err
}

// BeginAuthorization starts the authorization code grant (with PKCE) of an
// oauth2 credential: it records a single-use state, valid StateTTL and
// bound to the tenant and credential, and returns the provider's authorize
// URL. redirectAfter is where the callback sends the user when done.
// Admins only.
func (s *Service) BeginAuthorization(ctx context.Context, credentialID, redirectAfter string) (*Authorization, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, err
	}
	if msg := checkRedirect(redirectAfter, s.o.RequireHTTPS); msg != "" {
		return nil, errs.Invalid("input.redirectAfter", "%s", msg)
	}
	cred, row, err := credentialOf(ctx, c, v, credentialID)
	if err != nil {
		return nil, err
	}
	if row.Grant != connection.GrantAuthorizationCode {
		return nil, errs.Invalid("input.credentialID", "credential %s uses the client_credentials grant: nothing to authorize", credentialID)
	}
	if s.o.RedirectURL == "" {
		return nil, errs.E(errs.Validation, "this server has no callback URL: set SLUICE_PUBLIC_URL (or SLUICE_OAUTH_REDIRECT_URL)")
	}
	st, err := s.settingsOf(ctx, c, cred.ID)
	if err != nil {
		return nil, err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	// The tenant id travels in the state: the callback carries no token,
	// and looks the state up inside that tenant's RLS transaction.
	state := v.TenantID + "." + base64.RawURLEncoding.EncodeToString(raw)
	now := s.o.Now()
	expires := now.Add(s.o.StateTTL)
	if err := c.OAuthState.Create().SetCredentialID(cred.ID).SetStateHash(hashState(state)).SetRedirectAfter(redirectAfter).
		SetRedirectURI(s.o.RedirectURL).SetCreatedBy(v.Subject).SetExpiresAt(expires).Exec(ctx); err != nil {
		return nil, err
	}
	ver, err := s.verifier(ctx, c, state)
	if err != nil {
		return nil, err
	}
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(ver)}
	for k, val := range st.ExtraParams {
		opts = append(opts, oauth2.SetAuthURLParam(k, val))
	}
	u := st.config(s.o.RedirectURL).AuthCodeURL(state, opts...)
	if err := audit.Record(ctx, c, "credential.authorization.begin", "Credential", cred.ID, map[string]any{"expiresAt": expires.Format(time.RFC3339)}); err != nil {
		return nil, err
	}
	return &Authorization{URL: u, ExpiresAt: expires}, nil
}

// errBadState is the callback's answer to a state that is unknown, used,
// expired or malformed: one message for all, so it tells nothing.
var errBadState = errors.New("invalid or expired state")

// CallbackHandler serves GET /oauth/callback: it checks the state (known,
// unused, unexpired: used up whatever happens next), exchanges the code
// for tokens, stores them sealed, activates the connection, and redirects
// to the redirectAfter given when the authorization began, with
// `connection=active` or `connection=error&error=<code>`.
func (s *Service) CallbackHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		to, err := s.callback(r.Context(), r.URL.Query())
		if err != nil {
			if !errors.Is(err, errBadState) {
				s.o.Log.ErrorContext(r.Context(), "oauth callback", "err", err)
				http.Error(w, "authorization failed", http.StatusInternalServerError)
				return
			}
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		http.Redirect(w, r, to, http.StatusSeeOther)
	})
}

func (s *Service) callback(ctx context.Context, q url.Values) (string, error) {
	state := q.Get("state")
	tenantID, _, ok := strings.Cut(state, ".")
	if !ok || !ids.Valid(tenantID, ids.Tenant) || len(state) > 200 {
		return "", errBadState
	}
	ctx = viewer.SystemContext(ctx, tenantID)
	var st *ent.OAuthState
	var settings Settings
	var ver string
	// Used up first, in a transaction of its own: single use even when
	// the exchange then fails.
	err := store.InTenant(ctx, s.o.Client, func(ctx context.Context) error {
		c := ent.FromContext(ctx)
		row, err := c.OAuthState.Query().Where(oauthstate.StateHash(hashState(state))).ForUpdate().Only(ctx)
		if ent.IsNotFound(err) {
			return errBadState
		}
		if err != nil {
			return err
		}
		if row.UsedAt != nil || !s.o.Now().Before(row.ExpiresAt) {
			return errBadState
		}
		if err := c.OAuthState.UpdateOneID(row.ID).SetUsedAt(s.o.Now()).Exec(ctx); err != nil {
			return err
		}
		st = row
		if settings, err = s.settingsOf(ctx, c, row.CredentialID); err != nil {
			return err
		}
		ver, err = s.verifier(ctx, c, state)
		return err
	})
	if err != nil {
		return "", err
	}
	back := func(params url.Values) string {
		u, err := url.Parse(st.RedirectAfter)
		if err != nil {
			return st.RedirectAfter
		}
		qq := u.Query()
		for k, v := range params {
			qq[k] = v
		}
		qq.Set("credentialID", st.CredentialID)
		u.RawQuery = qq.Encode()
		return u.String()
	}
	if e := q.Get("error"); e != "" || q.Get("code") == "" {
		if e == "" {
			e = "no_code"
		}
		return back(url.Values{"connection": {"error"}, "error": {safeCode(e)}}), nil
	}
	ectx, cancel := context.WithTimeout(context.WithValue(ctx, oauth2.HTTPClient, s.o.HTTP), refreshTimeout)
	defer cancel()
	tok, err := settings.config(st.RedirectURI).Exchange(ectx, q.Get("code"), oauth2.VerifierOption(ver))
	if err != nil {
		pe := classify(ectx, err)
		s.o.Log.WarnContext(ctx, "oauth code exchange failed", "credential_id", st.CredentialID, "error", pe.msg)
		code := "exchange_failed"
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.ErrorCode != "" {
			code = re.ErrorCode
		}
		return back(url.Values{"connection": {"error"}, "error": {safeCode(code)}}), nil
	}
	ts := tokenSet{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, TokenType: tok.TokenType, Expiry: tok.Expiry.UTC(), raw: tok}
	err = store.InTenant(ctx, s.o.Client, func(ctx context.Context) error {
		c := ent.FromContext(ctx)
		row, err := c.Connection.Query().Where(connection.CredentialID(st.CredentialID)).ForUpdate().Only(ctx)
		if err != nil {
			return fmt.Errorf("lock connection: %w", err)
		}
		if row.Status == connection.StatusActive {
			// storeTokens audits changes of status only; a reconnect of an
			// active connection is audited here.
			if err := audit.Record(ctx, c, "credential.connection.authorize", "Credential", row.CredentialID, map[string]any{"from": "active", "to": "active"}); err != nil {
				return err
			}
		}
		return s.storeTokens(ctx, c, row, ts, "authorize", s.o.Now())
	})
	if err != nil {
		return "", err
	}
	s.wake(ctx, tenantID, st.CredentialID)
	return back(url.Values{"connection": {"active"}}), nil
}

// safeCode keeps an error code to a short token (it goes into a URL and
// comes from the provider).
func safeCode(s string) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= 64 {
			break
		}
		if r == '_' || r == '-' || r == '.' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// wake continues the runs waiting for a connection authorized again; the
// sweep finds any it misses.
func (s *Service) wake(ctx context.Context, tenantID, credentialID string) {
	if s.waker == nil {
		return
	}
	if _, err := s.waker.WakeCredentialWaits(context.WithoutCancel(ctx), tenantID, credentialID); err != nil {
		s.o.Log.WarnContext(ctx, "wake credential waits", "credential_id", credentialID, "err", err)
	}
}

// SetEnabled disables a connection (steps that need it wait, nothing is
// refreshed) or enables it again: active when it can get tokens by itself
// (stored tokens, client credentials), pending_authorization otherwise;
// the runs waiting for it are woken after commit. Admins only; audited.
func (s *Service) SetEnabled(ctx context.Context, credentialID string, enabled bool) (*Info, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, err
	}
	_, row, err := credentialOf(ctx, c, v, credentialID)
	if err != nil {
		return nil, err
	}
	if row, err = c.Connection.Query().Where(connection.ID(row.ID)).ForUpdate().Only(ctx); err != nil {
		return nil, err
	}
	to := connection.StatusDisabled
	if enabled {
		if row.Status != connection.StatusDisabled {
			return InfoOf(ctx, c, credentialID)
		}
		to = connection.StatusPendingAuthorization
		if len(row.Tokens) > 0 || row.Grant == connection.GrantClientCredentials {
			to = connection.StatusActive
		}
	} else if row.Status == connection.StatusDisabled {
		return InfoOf(ctx, c, credentialID)
	}
	u := c.Connection.UpdateOneID(row.ID).SetStatus(to)
	if to == connection.StatusActive {
		u.SetNextRefreshAt(s.o.Now()).SetConsecutiveFailures(0).ClearLastError()
	} else if to == connection.StatusDisabled {
		u.ClearNextRefreshAt()
	}
	if err := u.Exec(ctx); err != nil {
		return nil, err
	}
	action := "credential.connection.disable"
	if enabled {
		action = "credential.connection.enable"
	}
	if err := audit.Record(ctx, c, action, "Credential", credentialID, map[string]any{"from": string(row.Status), "to": string(to)}); err != nil {
		return nil, err
	}
	s.cache.drop(cacheKey(row.TenantID, credentialID))
	if to == connection.StatusActive {
		tenantID := row.TenantID
		store.AfterCommit(ctx, func() { s.wake(context.WithoutCancel(ctx), tenantID, credentialID) })
	}
	return InfoOf(ctx, c, credentialID)
}
