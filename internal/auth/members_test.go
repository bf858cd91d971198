package auth

import (
	"slices"
	"testing"
)

func TestCombineRoles(t *testing.T) {
	for _, tc := range []struct {
		name          string
		token, member []string
		isMember      bool
		want          []string
	}{
		{"not a member keeps the token's roles", []string{"operator"}, nil, false, []string{"operator"}},
		{"not a member without roles has none", nil, nil, false, nil},
		{"member without token roles takes the member's", nil, []string{"editor", "viewer"}, true, []string{"editor", "viewer"}},
		{"token roles intersected", []string{"admin", "viewer"}, []string{"viewer"}, true, []string{"viewer"}},
		{"no overlap is nothing", []string{"operator"}, []string{"viewer"}, true, nil},
		{"member admin covers operator", []string{"operator"}, []string{"admin"}, true, []string{"operator"}},
		{"member admin does not cover owner", []string{"owner", "editor"}, []string{"admin"}, true, []string{"editor"}},
		{"member owner covers owner", []string{"owner"}, []string{"owner"}, true, []string{"owner"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := CombineRoles(tc.token, tc.member, tc.isMember); !slices.Equal(got, tc.want) {
				t.Fatalf("CombineRoles(%v, %v, %v) = %v, want %v", tc.token, tc.member, tc.isMember, got, tc.want)
			}
		})
	}
}
