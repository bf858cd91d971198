package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// Child is a Sluice process the benchmark runs: `serve` or `worker`.
type Child struct {
	Name string
	URL  string // serve: the http://host:port it listens on
	// MetricsURL is the http://host:port it serves /metrics on, if it said.
	MetricsURL string
	cmd        *exec.Cmd
	done       chan struct{}
	logs       tail
}

// StartChild runs exe with args and env (nothing inherited) and waits until
// it is ready: a server's first stdout line names its address and its
// /healthz answers; a worker prints "worker started".
func StartChild(ctx context.Context, name, exe string, args, env []string) (*Child, error) {
	c := &Child{Name: name, done: make(chan struct{})}
	c.cmd = exec.Command(exe, args...)
	c.cmd.Env = env
	orphanProof(c.cmd)
	c.cmd.Stderr = &c.logs
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	readyc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if m, ok := strings.CutPrefix(line, "metrics on "); ok {
				c.MetricsURL = m // before the ready line, so read before ready
			}
			addr, isServer := strings.CutPrefix(line, "listening on ")
			if isServer || line == "worker started" {
				if !isServer {
					addr = ""
				}
				select {
				case readyc <- addr:
				default:
				}
			}
			_, _ = c.logs.Write([]byte(line + "\n"))
		}
	}()
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	select {
	case c.URL = <-readyc:
	case <-c.done:
		return nil, fmt.Errorf("%s exited early:\n%s", name, c.Logs())
	case <-time.After(30 * time.Second):
		c.Stop()
		return nil, fmt.Errorf("%s did not start within 30s:\n%s", name, c.Logs())
	case <-ctx.Done():
		c.Stop()
		return nil, ctx.Err()
	}
	if c.URL == "" {
		return c, nil
	}
	if err := WaitHealthy(ctx, c.URL, 15*time.Second); err != nil {
		c.Stop()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return c, nil
}

// WaitHealthy polls url's /healthz until it answers 200.
func WaitHealthy(ctx context.Context, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/healthz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s/healthz did not answer within %s", url, timeout)
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// PID is the child's process id.
func (c *Child) PID() int { return c.cmd.Process.Pid }

// Exited reports whether the child has ended.
func (c *Child) Exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// Logs returns the tail of the child's output.
func (c *Child) Logs() string { return c.logs.String() }

// Stop interrupts the child (a graceful shutdown) and kills it if it is
// still running after 20 seconds.
func (c *Child) Stop() {
	if c.cmd.Process == nil || c.Exited() {
		return
	}
	_ = c.cmd.Process.Signal(os.Interrupt)
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// tail keeps the last tailSize bytes written to it.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

const tailSize = 16 << 10

func (t *tail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - tailSize; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(b), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// PeakRSS returns a process's peak resident set size in bytes (VmHWM in
// /proc/<pid>/status; Linux only).
func PeakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	n, err := statusKB(b, "VmHWM:")
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	return n, nil
}
