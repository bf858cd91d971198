package control

import (
	"context"
	"fmt"
	"net/url"
	"sort"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/credential"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/connections"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// secretShapes lists, per credential type, the required and optional keys of
// the secret object. Values are strings.
var secretShapes = map[credential.Type]struct{ required, optional []string }{
	credential.TypeBearer:    {required: []string{"token"}},
	credential.TypeBasic:     {required: []string{"username", "password"}},
	credential.TypeHeader:    {required: []string{"name", "value"}},
	credential.TypeOpenai:    {required: []string{"apiKey"}, optional: []string{"baseURL", "organization"}},
	credential.TypeAnthropic: {required: []string{"apiKey"}, optional: []string{"baseURL"}},
	credential.TypePagerduty: {required: []string{"routingKey"}, optional: []string{"eventsURL"}},
	credential.TypeOauth2:    {required: []string{"clientId", "clientSecret"}, optional: connections.SecretFields},
}

// validateSecret checks a secret against its type's shape. Messages name
// keys, never values.
func validateSecret(typ credential.Type, secret map[string]any, path string) error {
	shape, ok := secretShapes[typ]
	if !ok {
		return errs.Invalid("input.type", "unknown credential type %q", typ)
	}
	var problems []errs.Problem
	allowed := map[string]bool{}
	for _, k := range shape.required {
		allowed[k] = true
		s, ok := secret[k].(string)
		if !ok || s == "" {
			problems = append(problems, errs.Problem{Path: path + "." + k, Message: "is required and must be a non-empty string"})
		}
	}
	for _, k := range shape.optional {
		allowed[k] = true
		if v, present := secret[k]; present {
			if _, ok := v.(string); !ok {
				problems = append(problems, errs.Problem{Path: path + "." + k, Message: "must be a string"})
			}
		}
	}
	keys := make([]string, 0, len(secret))
	for k := range secret {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !allowed[k] {
			problems = append(problems, errs.Problem{Path: path + "." + k, Message: fmt.Sprintf("is not a field of a %s credential", typ)})
		}
	}
	for _, k := range []string{"baseURL", "tokenURL", "authURL", "eventsURL"} {
		if s, ok := secret[k].(string); ok && s != "" {
			if u, err := url.Parse(s); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				problems = append(problems, errs.Problem{Path: path + "." + k, Message: "must be an http(s) URL"})
			}
		}
	}
	if len(problems) > 0 {
		return errs.InvalidAll("invalid "+string(typ)+" secret", problems)
	}
	return nil
}

// CreateCredential stores a new credential, encrypted. Admins only. The
// secret never comes back: only metadata and a fingerprint.
func (s *Service) CreateCredential(ctx context.Context, environmentID, name string, typ credential.Type, secret map[string]any) (*ent.Credential, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, err
	}
	if !namePattern.MatchString(name) {
		return nil, errs.Invalid("input.name", "must be lower case letters, digits, dashes and underscores, starting with a letter, at most 63 characters")
	}
	if err := credential.TypeValidator(typ); err != nil {
		return nil, errs.Invalid("input.type", "unknown credential type %q", typ)
	}
	if err := validateSecret(typ, secret, "input.secret"); err != nil {
		return nil, err
	}
	if err := s.validateConnection(typ, secret, "input.secret"); err != nil {
		return nil, err
	}
	env, err := EnvironmentByID(ctx, c, environmentID, "input.environmentID")
	if err != nil {
		return nil, err
	}
	id := newCredentialID()
	ct, fp, err := s.vault.SealCredential(ctx, c, id, 1, secret)
	if err != nil {
		return nil, err
	}
	cred, err := c.Credential.Create().
		SetID(id).
		SetEnvironmentID(env.ID).
		SetName(name).
		SetType(typ).
		SetCurrentVersion(1).
		SetFingerprint(fp).
		SetCreatedBy(v.Subject).
		Save(ctx)
	if err != nil {
		return nil, store.ConflictIfExists(err, "credential "+name+" in environment "+env.Name)
	}
	if err := c.CredentialVersion.Create().SetCredentialID(id).SetVersion(1).SetCiphertext(ct).SetFingerprint(fp).SetCreatedBy(v.Subject).Exec(ctx); err != nil {
		return nil, err
	}
	if err := s.connectionCreated(ctx, c, cred, secret); err != nil {
		return nil, err
	}
	return cred, audit.Record(ctx, c, "credential.create", "Credential", cred.ID, map[string]any{"name": name, "type": string(typ), "environmentID": env.ID, "fingerprint": fp})
}

// RotateCredential adds a new version of a credential's secret and makes it
// current. Older versions are kept for runs that still use them.
func (s *Service) RotateCredential(ctx context.Context, id string, secret map[string]any) (*ent.Credential, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, err
	}
	cred, err := c.Credential.Query().Where(credential.ID(id)).ForUpdate().Only(ctx)
	if ent.IsNotFound(err) {
		return nil, errs.NotFoundf("credential", id)
	}
	if err != nil {
		return nil, err
	}
	if !access.InScope(v, cred.EnvironmentID) {
		return nil, errs.NotFoundf("credential", id)
	}
	if err := validateSecret(cred.Type, secret, "input.secret"); err != nil {
		return nil, err
	}
	if err := s.validateConnection(cred.Type, secret, "input.secret"); err != nil {
		return nil, err
	}
	next := cred.CurrentVersion + 1
	ct, fp, err := s.vault.SealCredential(ctx, c, cred.ID, next, secret)
	if err != nil {
		return nil, err
	}
	if err := c.CredentialVersion.Create().SetCredentialID(cred.ID).SetVersion(next).SetCiphertext(ct).SetFingerprint(fp).SetCreatedBy(v.Subject).Exec(ctx); err != nil {
		return nil, err
	}
	cred, err = cred.Update().SetCurrentVersion(next).SetFingerprint(fp).SetRotatedAt(s.now()).Save(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.connectionRotated(ctx, c, cred, secret); err != nil {
		return nil, err
	}
	return cred, audit.Record(ctx, c, "credential.rotate", "Credential", cred.ID, map[string]any{"version": next, "fingerprint": fp})
}

// DeleteCredential removes a credential and all its versions.
func (s *Service) DeleteCredential(ctx context.Context, id string) (string, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleAdmin)
	if err != nil {
		return "", err
	}
	cred, err := c.Credential.Get(ctx, id)
	if ent.IsNotFound(err) {
		return "", errs.NotFoundf("credential", id)
	}
	if err != nil {
		return "", err
	}
	if !access.InScope(v, cred.EnvironmentID) {
		return "", errs.NotFoundf("credential", id)
	}
	if err := c.Credential.DeleteOneID(cred.ID).Exec(ctx); err != nil {
		return "", err
	}
	return cred.ID, audit.Record(ctx, c, "credential.delete", "Credential", cred.ID, map[string]any{"name": cred.Name})
}

func newCredentialID() string { return ids.New(ids.Credential) }
