// Package egress owns the one outbound HTTP client for every call a tenant
// can aim (http and llm steps, LLM base URLs, webhooks, OAuth token
// endpoints): it checks each resolved address after DNS against an SSRF
// policy, ignores proxy environment variables, follows no redirects and
// bounds every phase of a request with a timeout.
package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"code.dny.dev/ssrf"
)

// ErrDenied reports a destination the egress policy refuses: a non-global
// address (loopback, private, link-local, CGNAT, multicast, metadata, ...),
// a port or a scheme that is not allowed.
var ErrDenied = errors.New("egress: destination not allowed")

// ErrPortDenied is the ErrDenied of a port outside the allowed ones; such
// errors wrap both.
var ErrPortDenied = errors.New("port not allowed")

// deniedError is a refusal worded for the tenant: it names the host the
// caller asked for and why, never the address a name resolved to (that
// would let a tenant map the private network by DNS).
type deniedError struct {
	host   string
	port   uint16
	reason error // ErrPortDenied or ErrAddrDenied
}

// errAddrDenied is the reason for an address outside the policy.
var errAddrDenied = errors.New("address not allowed")

func (e *deniedError) Error() string {
	if e.reason == ErrPortDenied {
		return fmt.Sprintf("egress: port %d is not allowed for %s (only 80 and 443, unless the address is in SLUICE_EGRESS_ALLOW_CIDRS)", e.port, e.host)
	}
	return fmt.Sprintf("egress: %s resolves to a disallowed address (loopback, private, link-local, CGNAT or metadata)", e.host)
}

func (e *deniedError) Unwrap() []error { return []error{ErrDenied, e.reason} }

// denied words a policy refusal of host:port (from checkAddrPort) without
// the address.
func denied(host string, port uint16, err error) error {
	if errors.Is(err, ssrf.ErrProhibitedPort) {
		return &deniedError{host: host, port: port, reason: ErrPortDenied}
	}
	return &deniedError{host: host, port: port, reason: errAddrDenied}
}

// Config is the egress policy.
type Config struct {
	// AllowCIDRs are ranges allowed even though the policy would deny them
	// (tests and dev: 127.0.0.0/8). Any port is allowed inside them, since
	// local servers listen on arbitrary ports. If empty, none.
	AllowCIDRs []netip.Prefix
	// Ports are the destination ports allowed outside AllowCIDRs. If empty,
	// 80 and 443.
	Ports []uint16
	// Timeout bounds a whole request (until the body is closed) when the
	// caller's context has no deadline. If zero, 30 seconds.
	Timeout time.Duration
}

const (
	defaultTimeout = 30 * time.Second
	dialTimeout    = 10 * time.Second
	tlsTimeout     = 10 * time.Second
	// responseHeaderTimeout is a backstop for callers whose own deadline is
	// long: a non-streaming model call legitimately waits minutes for its
	// headers, but nothing should wait longer than this.
	responseHeaderTimeout = 5 * time.Minute
)

// metadataAddrs are cloud instance metadata endpoints. They are denied even
// inside AllowCIDRs: allowing a broad dev range must never expose the
// host's cloud credentials.
var metadataAddrs = []netip.Addr{
	netip.MustParseAddr("169.254.169.254"), // AWS, GCP, Azure, ...
	netip.MustParseAddr("169.254.170.2"),   // AWS ECS task metadata
	netip.MustParseAddr("fd00:ec2::254"),   // AWS IMDS over IPv6
	netip.MustParseAddr("100.100.100.200"), // Alibaba Cloud
}

// policy is Config resolved: the one place that decides whether an
// address may be dialled.
type policy struct {
	allow    []netip.Prefix
	guardian *ssrf.Guardian
	timeout  time.Duration
}

func newPolicy(cfg Config) *policy {
	ports := cfg.Ports
	if len(ports) == 0 {
		ports = []uint16{80, 443}
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	allow := make([]netip.Prefix, 0, len(cfg.AllowCIDRs))
	for _, p := range cfg.AllowCIDRs {
		if p.IsValid() {
			allow = append(allow, unmapPrefix(p))
		}
	}
	return &policy{
		allow:    allow,
		guardian: ssrf.New(ssrf.WithPorts(ports...)),
		timeout:  timeout,
	}
}

// unmapPrefix turns ::ffff:a.b.c.d/n into a.b.c.d/(n-96), because
// addresses are unmapped before they are checked.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96).Masked()
	}
	return p.Masked()
}

// checkAddrPort is the policy. IPv4-mapped IPv6 addresses are judged as the
// IPv4 address they carry.
func (p *policy) checkAddrPort(ap netip.AddrPort) error {
	addr := ap.Addr().Unmap().WithZone("")
	for _, m := range metadataAddrs {
		if addr == m {
			return fmt.Errorf("%w: %s is a cloud metadata address", ErrDenied, addr)
		}
	}
	for _, pr := range p.allow {
		if pr.Contains(addr) {
			return nil
		}
	}
	if err := p.guardian.SafeAddrPort(netip.AddrPortFrom(addr, ap.Port())); err != nil {
		return fmt.Errorf("%w: %w", ErrDenied, err)
	}
	return nil
}

// control is the net.Dialer Control hook: it runs after DNS resolution,
// on the exact address about to be connected, so DNS rebinding cannot slip
// a private address past an earlier check.
func (p *policy) control(network, address string, _ syscall.RawConn) error {
	if network != "tcp4" && network != "tcp6" {
		return fmt.Errorf("%w: network %s", ErrDenied, network)
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot parse address %q", ErrDenied, address)
	}
	if err := p.checkAddrPort(ap); err != nil {
		return &dialDenied{err: err, port: ap.Port()}
	}
	return nil
}

// dialDenied carries a dial-time refusal, which names the address, up to
// the transport, which rewords it with the request's host (denied).
type dialDenied struct {
	err  error
	port uint16
}

func (d *dialDenied) Error() string { return d.err.Error() }
func (d *dialDenied) Unwrap() error { return d.err }

func checkScheme(scheme string, requireHTTPS bool) error {
	switch {
	case scheme == "https":
		return nil
	case scheme == "http" && !requireHTTPS:
		return nil
	case requireHTTPS:
		return fmt.Errorf("%w: scheme %q (https required)", ErrDenied, scheme)
	default:
		return fmt.Errorf("%w: scheme %q (only http and https)", ErrDenied, scheme)
	}
}

// CheckURL applies the dial-time policy to a URL ahead of time, resolving
// its host now: for validating webhook endpoints and similar when they are
// created. Every resolved address must pass. Policy failures wrap
// ErrDenied; a host that does not resolve is reported without it. The
// client still checks again at dial time, since DNS answers change.
func CheckURL(ctx context.Context, cfg Config, rawURL string, requireHTTPS bool) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("%w: invalid URL", ErrDenied)
	}
	if err := checkScheme(strings.ToLower(u.Scheme), requireHTTPS); err != nil {
		return err
	}
	host := u.Hostname()
	if host == "" {
		return fmt.Errorf("%w: URL has no host", ErrDenied)
	}
	port := uint16(443)
	if strings.EqualFold(u.Scheme, "http") {
		port = 80
	}
	if s := u.Port(); s != "" {
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil || n == 0 {
			return fmt.Errorf("%w: invalid port %q", ErrDenied, s)
		}
		port = uint16(n)
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		addrs, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return fmt.Errorf("egress: resolve %s: %w", host, err)
		}
		if len(addrs) == 0 {
			return fmt.Errorf("egress: resolve %s: no addresses", host)
		}
	}
	p := newPolicy(cfg)
	for _, a := range addrs {
		if err := p.checkAddrPort(netip.AddrPortFrom(a, port)); err != nil {
			return denied(host, port, err)
		}
	}
	return nil
}
