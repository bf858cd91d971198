package auth

import (
	"slices"

	"github.com/sluicehq/sluice/internal/viewer"
)

// CombineRoles gives the roles of a JWT's caller from the roles the token
// carries (known ones only) and its subject's member row in the tenant:
//   - a member with a token that carries roles: the token's roles that the
//     member holds, a member's owner covering every role and its admin every
//     role but owner (a token narrows a member, never widens it);
//   - a member with a token that carries none: the member's roles;
//   - a subject that is not a member: the token's roles as given (the
//     behaviour before members could be managed through the API, which
//     tokens minted by a trusted issuer rely on); none is refused.
//
// API keys do not pass here: a key has the roles it was created with.
func CombineRoles(tokenRoles, memberRoles []string, isMember bool) []string {
	if !isMember {
		return tokenRoles
	}
	if len(tokenRoles) == 0 {
		return slices.Clone(memberRoles)
	}
	var out []string
	for _, r := range tokenRoles {
		if memberCovers(memberRoles, r) {
			out = append(out, r)
		}
	}
	return out
}

func memberCovers(memberRoles []string, r string) bool {
	switch {
	case slices.Contains(memberRoles, r), slices.Contains(memberRoles, viewer.RoleOwner):
		return true
	case slices.Contains(memberRoles, viewer.RoleAdmin):
		return r != viewer.RoleOwner
	}
	return false
}
