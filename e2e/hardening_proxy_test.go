package e2e

import (
	"encoding/binary"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tcpProxy forwards loopback connections to target (Postgres or Redis) and
// can be taken down and brought back on the same address: down closes the
// listener (new connections are refused) and every open connection, as an
// outage would. With countPG set it also counts the statements clients send
// to Postgres (simple Query and extended-protocol Execute messages).
type tcpProxy struct {
	t       *testing.T
	target  string
	addr    string
	countPG bool

	statements atomic.Int64

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
}

func newTCPProxy(t *testing.T, target string, up, countPG bool) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{t: t, target: target, addr: ln.Addr().String(), countPG: countPG, conns: map[net.Conn]struct{}{}}
	if up {
		p.ln = ln
		go p.accept(ln)
	} else {
		ln.Close()
	}
	t.Cleanup(func() { p.down() })
	return p
}

// up listens again on the proxy's address.
func (p *tcpProxy) up() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		return
	}
	var err error
	for i := 0; i < 50; i++ { // the port was just released; retry briefly
		if p.ln, err = net.Listen("tcp", p.addr); err == nil {
			go p.accept(p.ln)
			return
		}
		time.Sleep(100 * time.Millisecond) // retry pacing while the kernel releases the port
	}
	p.t.Fatalf("proxy cannot listen on %s again: %v", p.addr, err)
}

// down refuses new connections and cuts the open ones.
func (p *tcpProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

func (p *tcpProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *tcpProxy) accept(ln net.Listener) {
	for {
		client, err := ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		if !p.track(client) || !p.track(server) {
			client.Close()
			server.Close()
			continue
		}
		go func() {
			defer client.Close()
			defer server.Close()
			_, _ = io.Copy(client, server)
		}()
		go func() {
			defer client.Close()
			defer server.Close()
			if p.countPG {
				p.copyCounting(server, client)
			} else {
				_, _ = io.Copy(server, client)
			}
		}()
	}
}

// copyCounting forwards a Postgres frontend stream, counting statements: the
// untyped startup (and SSL/GSS requests before it), then typed messages.
func (p *tcpProxy) copyCounting(dst io.Writer, src io.Reader) {
	startup := true
	hdr := make([]byte, 5)
	for {
		if startup {
			if _, err := io.ReadFull(src, hdr[:4]); err != nil {
				return
			}
			n := int(binary.BigEndian.Uint32(hdr[:4]))
			body := make([]byte, n-4)
			if _, err := io.ReadFull(src, body); err != nil {
				return
			}
			if _, err := dst.Write(append(append([]byte{}, hdr[:4]...), body...)); err != nil {
				return
			}
			code := uint32(0)
			if len(body) >= 4 {
				code = binary.BigEndian.Uint32(body[:4])
			}
			if code != 80877103 && code != 80877104 { // not SSLRequest / GSSENCRequest
				startup = false
			}
			continue
		}
		if _, err := io.ReadFull(src, hdr); err != nil {
			return
		}
		if hdr[0] == 'Q' || hdr[0] == 'E' {
			p.statements.Add(1)
		}
		n := int(binary.BigEndian.Uint32(hdr[1:5]))
		body := make([]byte, n-4)
		if _, err := io.ReadFull(src, body); err != nil {
			return
		}
		if _, err := dst.Write(append(append([]byte{}, hdr...), body...)); err != nil {
			return
		}
	}
}

// withHost rewrites the host:port of a postgres:// or redis:// URL.
func withHost(u, hostport string) string {
	scheme, rest, _ := strings.Cut(u, "://")
	userinfo := ""
	if at := strings.Index(rest, "@"); at >= 0 {
		userinfo, rest = rest[:at+1], rest[at+1:]
	}
	path := ""
	if slash := strings.Index(rest, "/"); slash >= 0 {
		path = rest[slash:]
	}
	return scheme + "://" + userinfo + hostport + path
}

// pgTarget is the Postgres address of the suite's app URL.
func pgTarget() string {
	rest := suite.appURL[strings.Index(suite.appURL, "@")+1:]
	return rest[:strings.Index(rest, "/")]
}
