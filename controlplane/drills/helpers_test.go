package drills

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
	"github.com/molecule-ai/molecule-agent/controlplane/api/tlstest"
)

// Scaled time: the 10 s interval and 60 s outage, divided by ten.
const (
	interval = time.Second
	grace    = 500 * time.Millisecond
	window   = 3*interval + grace // silence before a host is offline
	outage   = 6 * time.Second
)

var cpBin string

func TestMain(m *testing.M) {
	os.Exit(testenv.RunMain(m, func(dir string) (err error) {
		cpBin, err = testenv.GoBuild(dir, "molecule-controlplane", testenv.ControlPlanePackage)
		return err
	}))
}

// cp is one real control-plane process.
type cp struct {
	t       *testing.T
	addr    string
	args    []string
	cmd     *exec.Cmd
	done    chan struct{}
	log     *lockedBuf
	tokFile string
	ca      *tlstest.CA  // set by useTLS: serves HTTPS with a certificate of ca
	hc      *http.Client // trusts ca
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuf) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// adminToken writes a fresh admin token file in dir.
func adminToken(t *testing.T, dir string) (string, secret.Secret) {
	t.Helper()
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	tok := hex.EncodeToString(b)
	path := filepath.Join(dir, "admin-token")
	if err := os.WriteFile(path, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, secret.New(tok)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().String()
}

// newCP prepares a control plane on db with the drills' scaled timing;
// start runs it.
func newCP(t *testing.T, db, tokFile string, extra ...string) *cp {
	c := &cp{t: t, addr: freeAddr(t), tokFile: tokFile, log: &lockedBuf{}}
	c.args = append([]string{"serve", "--listen", c.addr, "--db", db, "--admin-token-file", tokFile,
		"--interval", interval.String(), "--grace", grace.String(), "--flush-window", interval.String(),
		"--host-rate", "100", "--host-burst", "100", "--log-level", "info"}, extra...)
	t.Cleanup(func() { c.kill() })
	return c
}

func (c *cp) url() string {
	if c.ca != nil {
		return "https://" + c.addr
	}
	return "http://" + c.addr
}

// useTLS makes c serve HTTPS with a certificate of a fresh test CA for
// its address, as a control plane an agent reaches off loopback must.
func (c *cp) useTLS(dir string) {
	c.t.Helper()
	host, _, err := net.SplitHostPort(c.addr)
	if err != nil {
		c.t.Fatal(err)
	}
	c.ca = tlstest.NewCA(c.t, "drill control plane CA")
	f := c.ca.WriteFiles(c.t, dir, host)
	c.args = append(c.args, "--tls-cert", f.Cert, "--tls-key", f.Key)
	c.hc = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c.ca.Pool()}}}
}

// http returns a client trusting c's certificate.
func (c *cp) http() *http.Client {
	if c.hc == nil {
		return http.DefaultClient
	}
	return c.hc
}

func (c *cp) start() {
	c.t.Helper()
	c.cmd = exec.Command(cpBin, c.args...)
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	c.done = make(chan struct{})
	if err := c.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(c.cmd, c.done)
	eventually(c.t, testenv.Long, "control plane "+c.addr+" healthy", func() bool {
		select {
		case <-c.done:
			c.t.Fatalf("control plane exited; log:\n%s", c.log.String())
		default:
		}
		_, err := c.health()
		return err == nil
	})
}

// stop ends the process with SIGTERM (graceful: final flush) or SIGKILL.
func (c *cp) stop(sig syscall.Signal) {
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Signal(sig)
	select {
	case <-c.done:
	case <-time.After(testenv.Short):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
	c.cmd = nil
}

func (c *cp) kill() { c.stop(syscall.SIGKILL) }

type health struct {
	Status      string `json:"status"`
	Sweeper     bool   `json:"sweeper"`
	MassSilence bool   `json:"mass_silence"`
}

func (c *cp) health() (health, error) {
	var h health
	resp, err := c.http().Get(c.url() + api.PathHealthz)
	if err != nil {
		return h, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return h, fmt.Errorf("healthz: %d", resp.StatusCode)
	}
	return h, json.NewDecoder(resp.Body).Decode(&h)
}

// metric reads one unlabelled sample from /metrics.
func (c *cp) metric(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := c.http().Get(c.url() + api.PathMetrics)
	if err != nil {
		t.Fatalf("scrape %s: %v", c.addr, err)
	}
	defer func() { _ = resp.Body.Close() }()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s = %q", name, v)
			}
			return f
		}
	}
	t.Fatalf("metric %s not found on %s", name, c.addr)
	return 0
}

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond) // polling, not synchronising
	}
}

// proxy is a round-robin HTTP load balancer: each request goes to the
// next replica; a replica that refuses the connection is skipped.
type proxy struct {
	backends []string
	next     atomic.Uint64
	tr       *http.Transport
	served   []atomic.Int64
}

func newProxy(backends ...string) *proxy {
	return &proxy{backends: backends, tr: &http.Transport{MaxIdleConnsPerHost: 64, ResponseHeaderTimeout: 10 * time.Second},
		served: make([]atomic.Int64, len(backends))}
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, api.MaxBodyBytes+1))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	start := p.next.Add(1)
	for i := range uint64(len(p.backends)) {
		n := (start + i) % uint64(len(p.backends))
		out, _ := http.NewRequestWithContext(r.Context(), r.Method, "http://"+p.backends[n]+r.URL.RequestURI(), bytes.NewReader(body))
		out.Header = r.Header.Clone()
		resp, err := p.tr.RoundTrip(out)
		if err != nil {
			continue // replica down: the next one
		}
		p.served[n].Add(1)
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
		_ = resp.Body.Close()
		return
	}
	http.Error(w, "no replica answered", http.StatusBadGateway)
}

// countEvents counts the control plane's latest 10,000 events of a type
// at or after since.
func countEvents(ctx context.Context, c *cp, admin secret.Secret, typ string, since time.Time) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url()+api.PathAdminEvents+"?limit=10000", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+admin.Reveal())
	resp, err := c.http().Do(req)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	var out api.EventList
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return 0, err
	}
	n := 0
	for _, e := range out.Events {
		if e.Type == typ && !e.At.Before(since) {
			n++
		}
	}
	return n, nil
}
