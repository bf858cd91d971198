package egress_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/egress"
)

var loopback = egress.Config{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}

func okServer(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok"))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, c *http.Client, url string) (*http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err == nil {
		resp.Body.Close()
	}
	return resp, err
}

func TestLoopbackDeniedByDefault(t *testing.T) {
	srv := okServer(t)
	_, err := get(t, egress.NewClient(egress.Config{}), srv.URL)
	if !errors.Is(err, egress.ErrDenied) {
		t.Fatalf("err = %v, want ErrDenied", err)
	}
}

func TestLoopbackAllowedByConfig(t *testing.T) {
	srv := okServer(t)
	resp, err := get(t, egress.NewClient(loopback), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d", resp.StatusCode)
	}
}

func TestNonGlobalDestinationsDenied(t *testing.T) {
	c := egress.NewClient(loopback) // the allowance for loopback must not open anything else
	for _, u := range []string{
		"http://10.0.0.1/",
		"http://169.254.169.254/latest/meta-data/",
		"http://[fd00:ec2::254]/",
		"http://100.64.0.1/",
		"http://192.168.1.1/",
		"http://[fe80::1]/",
		"http://224.0.0.1/",
		"http://0.0.0.0/",
	} {
		t.Run(u, func(t *testing.T) {
			if _, err := get(t, c, u); !errors.Is(err, egress.ErrDenied) {
				t.Fatalf("err = %v, want ErrDenied", err)
			}
		})
	}
	// [::1] is loopback too, but IPv6: not inside 127.0.0.0/8.
	t.Run("[::1]", func(t *testing.T) {
		if _, err := get(t, c, "http://[::1]:80/"); !errors.Is(err, egress.ErrDenied) {
			t.Fatalf("err = %v, want ErrDenied", err)
		}
	})
}

func TestMetadataDeniedEvenWhenAllowed(t *testing.T) {
	c := egress.NewClient(egress.Config{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("169.254.0.0/16")}})
	if _, err := get(t, c, "http://169.254.169.254/"); !errors.Is(err, egress.ErrDenied) {
		t.Fatalf("err = %v, want ErrDenied", err)
	}
}

func TestRedirectNotFollowed(t *testing.T) {
	var followed atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("/start", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/target", http.StatusFound)
	})
	mux.HandleFunc("/target", func(w http.ResponseWriter, r *http.Request) { followed.Store(true) })
	srv := httptest.NewServer(mux)
	defer srv.Close()

	resp, err := get(t, egress.NewClient(loopback), srv.URL+"/start")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/target" {
		t.Fatalf("status = %d, location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if followed.Load() {
		t.Fatal("redirect was followed")
	}
}

func TestProxyEnvIgnored(t *testing.T) {
	var proxied atomic.Bool
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proxied.Store(true)
		w.Write([]byte("from proxy"))
	}))
	defer proxy.Close()
	t.Setenv("HTTP_PROXY", proxy.URL)
	t.Setenv("http_proxy", proxy.URL)
	t.Setenv("NO_PROXY", "")
	t.Setenv("no_proxy", "")

	// A name that does not resolve: a client honouring the proxy would
	// hand it to the (allowed) proxy and succeed.
	_, err := get(t, egress.NewClient(loopback), "http://sluice-egress-test.invalid/")
	if err == nil {
		t.Fatal("request succeeded, so it went through the proxy")
	}
	if proxied.Load() {
		t.Fatal("proxy received the request")
	}
}

func TestSchemeDenied(t *testing.T) {
	c := egress.NewClient(loopback)
	req, _ := http.NewRequest(http.MethodGet, "ftp://127.0.0.1/", nil)
	if _, err := c.Do(req); !errors.Is(err, egress.ErrDenied) {
		t.Fatalf("err = %v, want ErrDenied", err)
	}
}

func TestDefaultTimeoutWithoutDeadline(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)

	c := egress.NewClient(egress.Config{AllowCIDRs: loopback.AllowCIDRs, Timeout: 100 * time.Millisecond})
	start := time.Now()
	_, err := c.Get(srv.URL)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %s", d)
	}
}

func TestPortsOutsideAllowCIDRs(t *testing.T) {
	ctx := context.Background()
	if err := egress.CheckURL(ctx, egress.Config{}, "https://93.184.215.14:8443/", false); !errors.Is(err, egress.ErrDenied) {
		t.Fatalf("port 8443: err = %v, want ErrDenied", err)
	}
	if err := egress.CheckURL(ctx, egress.Config{Ports: []uint16{8443}}, "https://93.184.215.14:8443/", false); err != nil {
		t.Fatalf("port 8443 allowed by config: %v", err)
	}
}

func TestCheckURL(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		url          string
		cfg          egress.Config
		requireHTTPS bool
		denied       bool
	}{
		{url: "http://localhost", denied: true},
		{url: "http://localhost:8080/hook", cfg: egress.Config{AllowCIDRs: []netip.Prefix{
			netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"),
		}}},
		{url: "http://127.0.0.1/", denied: true},
		{url: "http://[::1]/", cfg: loopback, denied: true},
		{url: "http://[::ffff:127.0.0.1]/", cfg: loopback},
		{url: "http://169.254.169.254/", denied: true},
		{url: "http://10.1.2.3/", denied: true},
		{url: "https://93.184.215.14/"},
		{url: "http://93.184.215.14/", requireHTTPS: true, denied: true},
		{url: "ftp://93.184.215.14/", denied: true},
		{url: "/relative", denied: true},
	} {
		err := egress.CheckURL(ctx, tc.cfg, tc.url, tc.requireHTTPS)
		if tc.denied && !errors.Is(err, egress.ErrDenied) {
			t.Errorf("%s: err = %v, want ErrDenied", tc.url, err)
		}
		if !tc.denied && err != nil {
			t.Errorf("%s: err = %v, want nil", tc.url, err)
		}
	}
}
