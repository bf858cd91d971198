package auth

import (
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/viewer"
)

func TestLeaseEndsAtExpiry(t *testing.T) {
	ls := NewLeases(nil, LeasesOptions{})
	l := ls.Open(&viewer.Viewer{TenantID: "ten_a", ExpiresAt: time.Now().Add(50 * time.Millisecond)})
	defer l.Close()
	if l.Err() != nil {
		t.Fatal("ended at once")
	}
	select {
	case <-l.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("lease outlived its expiry")
	}
	if errs.CodeOf(l.Err()) != errs.Unauthenticated {
		t.Fatalf("Err = %v, want UNAUTHENTICATED", l.Err())
	}
	if expired := ls.Open(&viewer.Viewer{TenantID: "ten_a", ExpiresAt: time.Now().Add(-time.Second)}); expired.Err() == nil {
		t.Fatal("a lease of an expired credential lasts")
	}
}

func TestLeaseRevokedEndsOnlyThatKey(t *testing.T) {
	ls := NewLeases(nil, LeasesOptions{})
	a1 := ls.Open(&viewer.Viewer{TenantID: "ten_a", APIKeyID: "key_1"})
	a2 := ls.Open(&viewer.Viewer{TenantID: "ten_a", APIKeyID: "key_1"})
	other := ls.Open(&viewer.Viewer{TenantID: "ten_a", APIKeyID: "key_2"})
	jwt := ls.Open(&viewer.Viewer{TenantID: "ten_a"})
	closed := ls.Open(&viewer.Viewer{TenantID: "ten_a", APIKeyID: "key_1"})
	closed.Close()

	ls.Revoked("ten_b", "key_1") // another tenant's message names no key here
	if a1.Err() != nil {
		t.Fatal("a revocation of another tenant ended a lease")
	}
	ls.Revoked("ten_a", "key_1")
	for i, l := range []*Lease{a1, a2} {
		if errs.CodeOf(l.Err()) != errs.Unauthenticated {
			t.Fatalf("lease %d of the revoked key: Err = %v", i, l.Err())
		}
	}
	if other.Err() != nil || jwt.Err() != nil || closed.Err() != nil {
		t.Fatal("a revocation ended a lease of another credential, or a closed one")
	}
	a1.Close()
	a2.Close()
	other.Close()
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if len(ls.keys) != 0 {
		t.Fatalf("closed leases are still watched: %v", ls.keys)
	}
}

func TestNilLeases(t *testing.T) {
	var ls *Leases
	l := ls.Open(&viewer.Viewer{TenantID: "ten_a", APIKeyID: "key_1"})
	ls.Revoked("ten_a", "key_1")
	ls.Recheck()
	if l.Err() != nil {
		t.Fatal("nil Leases ended a lease without expiry")
	}
	l.Close()
	var none *Lease
	if none.Done() != nil || none.Err() != nil {
		t.Fatal("a nil lease ends")
	}
}
