package e2e

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/auth"
)

const (
	mAddMember    = `mutation($s: String!, $r: [String!]!) { addMember(subject: $s, roles: $r) { id subject roles } }`
	mUpdateMember = `mutation($id: ID!, $r: [String!]!) { updateMember(id: $id, roles: $r) { id subject roles } }`
	mRemoveMember = `mutation($id: ID!) { removeMember(id: $id) }`
	qMemberCount  = `{ members { totalCount } }`
	qMemberAudit  = `{ auditLogs(first: 1000) { edges { node { action actor targetID metadata } } } }`
	qViewerRoles  = `{ viewer { subject roles } }`
)

// subjectToken mints a JWT for subject with roles (none: a token without
// a roles claim).
func subjectToken(t *testing.T, tenantID, subject string, roles ...string) string {
	t.Helper()
	tok, err := auth.MintHS256([]byte(jwtSecret), jwtIssuer, jwtAudience,
		auth.Claims{Subject: subject, TenantID: tenantID, Roles: roles}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// viewerRoles is what the server says the caller's roles are, or the error
// code when it refuses the caller.
func viewerRoles(t *testing.T, tenantID, subject string, roles ...string) string {
	t.Helper()
	r := newClient(t, 0, subjectToken(t, tenantID, subject, roles...)).do(qViewerRoles, nil)
	if code := r.Code(); code != "" {
		return code
	}
	return fmt.Sprint(get(r.Data, "viewer.roles"))
}

// TestMembers: admins and owners manage members through GraphQL, only an
// owner touches the owner role, the last owner stays, roles are validated
// with nothing written, every change is audited, a member's roles bound a
// token's as the README says, API keys show who created them, and another
// tenant's members are missing.
func TestMembers(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "members")
	owner := f.owner // user-owner@e2e.test, not a member: the token's roles
	admin := newClient(t, 1, token(t, f.tenantID, "admin"))
	sfx := randHex(3)
	alice, bob, carol, dave := "alice-"+sfx+"@e2e.test", "bob-"+sfx+"@e2e.test", "carol-"+sfx+"@e2e.test", "dave-"+sfx+"@e2e.test"

	aliceID := str(owner.ok(mAddMember, map[string]any{"s": alice, "r": []string{"owner"}}), "addMember.id")
	bobID := str(owner.ok(mAddMember, map[string]any{"s": bob, "r": []string{"operator"}}), "addMember.id")
	before := get(owner.ok(qMemberCount, nil), "members.totalCount")

	// Bad input: VALIDATION with the path, nothing written.
	r := owner.fail("VALIDATION", mAddMember, map[string]any{"s": carol, "r": []string{"viewer", "superuser"}})
	if p := r.Errors[0].Extensions["path"]; p != "roles[1]" {
		t.Errorf("unknown role path: %v (%s)", p, r.Raw)
	}
	owner.fail("VALIDATION", mAddMember, map[string]any{"s": carol, "r": []string{}})
	owner.fail("VALIDATION", mUpdateMember, map[string]any{"id": bobID, "r": []string{"root"}})
	owner.fail("CONFLICT", mAddMember, map[string]any{"s": bob, "r": []string{"viewer"}})
	// Admins manage members but not the owner role.
	admin.fail("FORBIDDEN", mAddMember, map[string]any{"s": carol, "r": []string{"owner"}})
	admin.fail("FORBIDDEN", mUpdateMember, map[string]any{"id": aliceID, "r": []string{"admin"}})
	admin.fail("FORBIDDEN", mRemoveMember, map[string]any{"id": aliceID})
	newClient(t, 0, token(t, f.tenantID, "operator")).fail("FORBIDDEN", mAddMember, map[string]any{"s": carol, "r": []string{"viewer"}})
	if n := get(owner.ok(qMemberCount, nil), "members.totalCount"); n != before {
		t.Fatalf("members after refused changes: %v, want %v", n, before)
	}
	carolID := str(admin.ok(mAddMember, map[string]any{"s": carol, "r": []string{"viewer"}}), "addMember.id")

	// The last owner can be neither demoted nor removed.
	owner.fail("CONFLICT", mUpdateMember, map[string]any{"id": aliceID, "r": []string{"admin"}})
	owner.fail("CONFLICT", mRemoveMember, map[string]any{"id": aliceID})
	daveID := str(owner.ok(mAddMember, map[string]any{"s": dave, "r": []string{"owner"}}), "addMember.id")
	if got := str(owner.ok(mRemoveMember, map[string]any{"id": aliceID}), "removeMember"); got != aliceID {
		t.Fatalf("removeMember: %q", got)
	}
	owner.fail("CONFLICT", mUpdateMember, map[string]any{"id": daveID, "r": []string{"editor"}})
	// Dave, the owner member, acts with the member's roles.
	if got := viewerRoles(t, f.tenantID, dave); got != "[owner]" {
		t.Errorf("dave without token roles: %s", got)
	}

	// Roles combined: a member's token roles are intersected with the
	// member's; a token without roles takes the member's; a subject that is
	// not a member keeps its token's roles, and none is refused.
	for _, tc := range []struct {
		subject string
		roles   []string
		want    string
	}{
		{bob, nil, "[operator]"},
		{bob, []string{"operator", "viewer"}, "[operator]"},
		{bob, []string{"admin"}, "FORBIDDEN"},
		{carol, []string{"viewer"}, "[viewer]"},
		{"stranger-" + sfx + "@e2e.test", []string{"editor"}, "[editor]"},
		{"stranger-" + sfx + "@e2e.test", nil, "FORBIDDEN"},
	} {
		if got := viewerRoles(t, f.tenantID, tc.subject, tc.roles...); got != tc.want {
			t.Errorf("%s with token roles %v: %s, want %s", tc.subject, tc.roles, got, tc.want)
		}
	}
	// A member's token that claims more than the member holds cannot use it.
	newClient(t, 0, subjectToken(t, f.tenantID, bob, "admin", "operator")).fail("FORBIDDEN", mAddMember, map[string]any{"s": "x-" + sfx, "r": []string{"viewer"}})
	// Changing a member changes its next request.
	if got := get(admin.ok(mUpdateMember, map[string]any{"id": bobID, "r": []string{"viewer", "editor", "editor"}}), "updateMember.roles"); fmt.Sprint(got) != "[editor viewer]" {
		t.Errorf("updateMember roles: %v", got)
	}
	if got := viewerRoles(t, f.tenantID, bob); got != "[editor viewer]" {
		t.Errorf("bob after update: %s", got)
	}
	admin.ok(mRemoveMember, map[string]any{"id": carolID})
	if got := viewerRoles(t, f.tenantID, carol); got != "FORBIDDEN" {
		t.Errorf("carol removed, token without roles: %s", got)
	}

	// Every change is audited, naming its actor.
	var actions []string
	for _, e := range edges(owner.ok(qMemberAudit, nil), "auditLogs") {
		switch str(e, "targetID") {
		case aliceID, bobID, carolID, daveID:
			actions = append(actions, str(e, "action")+" "+str(e, "targetID")+" "+str(e, "actor"))
		}
	}
	for _, want := range []string{
		"member.add " + aliceID + " user-owner@e2e.test", "member.add " + carolID + " user-admin@e2e.test",
		"member.remove " + aliceID + " user-owner@e2e.test", "member.update " + bobID + " user-admin@e2e.test",
		"member.remove " + carolID + " user-admin@e2e.test", "member.add " + daveID + " user-owner@e2e.test",
	} {
		if !slices.Contains(actions, want) {
			t.Errorf("audit entry %q missing: %v", want, actions)
		}
	}
	if len(actions) != 7 { // 4 adds, 1 update, 2 removes
		t.Errorf("member audit entries: %d, want 7: %v", len(actions), actions)
	}

	// API keys list who created them.
	keys := edges(owner.ok(`{ apiKeys { edges { node { id createdBy } } } }`, nil), "apiKeys")
	if len(keys) != 1 || keys[0]["id"] != f.apiKeyID || keys[0]["createdBy"] != "user-owner@e2e.test" {
		t.Errorf("apiKeys createdBy: %v", keys)
	}

	// Another tenant's members are missing, exactly like unknown ids.
	other := newFixture(t, "members-b")
	for _, id := range []string{bobID, "mem_01JZZZZZZZZZZZZZZZZZZZZZZZ"} {
		other.owner.fail("NOT_FOUND", mUpdateMember, map[string]any{"id": id, "r": []string{"viewer"}})
		other.owner.fail("NOT_FOUND", mRemoveMember, map[string]any{"id": id})
	}
	if got := viewerRoles(t, other.tenantID, bob); got != "FORBIDDEN" {
		t.Errorf("bob in another tenant without token roles: %s", got)
	}
	if got := viewerRoles(t, f.tenantID, bob); got != "[editor viewer]" {
		t.Errorf("bob after the other tenant's attempts: %s", got)
	}
}
