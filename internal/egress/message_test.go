package egress_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/egress"
)

// TestDeniedErrorsNameHostNotAddress: a refusal at dial time says which
// host and why, never the address the name resolved to.
func TestDeniedErrorsNameHostNotAddress(t *testing.T) {
	c := egress.NewClient(egress.Config{})
	// localhost resolves to 127.0.0.1; port 80 is allowed, the address is not.
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://localhost/", nil)
	_, err := c.Do(req)
	if !errors.Is(err, egress.ErrDenied) {
		t.Fatalf("err = %v, want ErrDenied", err)
	}
	if strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("error quotes the resolved address: %v", err)
	}
	if !strings.Contains(err.Error(), "localhost resolves to a disallowed address") {
		t.Errorf("error = %v, want it to say the host resolves to a disallowed address", err)
	}
}

// TestDeniedPortIsNamed: a port outside the allowed ones is reported as
// the port, both by CheckURL and at dial time.
func TestDeniedPortIsNamed(t *testing.T) {
	err := egress.CheckURL(context.Background(), egress.Config{}, "https://93.184.215.14:8443/", false)
	if !errors.Is(err, egress.ErrDenied) || !errors.Is(err, egress.ErrPortDenied) {
		t.Fatalf("err = %v, want ErrDenied and ErrPortDenied", err)
	}
	if !strings.Contains(err.Error(), "port 8443") {
		t.Errorf("error = %v, want it to name port 8443", err)
	}
	// At dial time too, without the address the name resolved to.
	srv := okServer(t)
	u, _ := url.Parse(srv.URL)
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://localhost:"+u.Port()+"/", nil)
	_, err = egress.NewClient(egress.Config{}).Do(req)
	if !errors.Is(err, egress.ErrPortDenied) || !strings.Contains(err.Error(), "port "+u.Port()) || strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("dial-time port refusal: %v", err)
	}
}
