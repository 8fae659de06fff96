package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/heartbeat"
	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
	"github.com/molecule-ai/molecule-agent/controlplane/attest/attesttest"
)

var binary string

func TestMain(m *testing.M) {
	os.Exit(testenv.RunMain(m, func(dir string) (err error) {
		binary, err = testenv.GoBuild(dir, "molecule-controlplane", testenv.ControlPlanePackage)
		return err
	}))
}

const (
	interval = time.Second
	grace    = 500 * time.Millisecond
)

// proc is the real control-plane binary.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	done   chan error
}

func startBinary(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, stderr: &bytes.Buffer{}, done: make(chan error, 1)}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Env = append(os.Environ(), "MOLECULE_CP_ADMIN_TOKEN=")
	p.cmd.Stderr = &lockedWriter{w: p.stderr}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// term sends SIGTERM and waits for a clean exit.
func (p *proc) term() {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			p.t.Fatalf("control plane exited with %v after SIGTERM; stderr:\n%s", err, p.stderr)
		}
	case <-time.After(testenv.Short):
		p.t.Fatal("control plane did not exit within 10s of SIGTERM")
	}
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

func waitHealthy(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(testenv.Short)
	for {
		resp, err := http.Get(url + api.PathHealthz)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("control plane at %s not healthy: %v", url, err)
		}
		time.Sleep(20 * time.Millisecond) // polling
	}
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond) // polling
	}
}

type agentRun struct {
	loop   *heartbeat.Loop
	cancel context.CancelFunc
	done   chan error
	gone   atomic.Bool
	beats  atomic.Int64
}

func startAgent(t *testing.T, url, dir string, proof func(context.Context) (api.Proof, error), tunnel string) *agentRun {
	t.Helper()
	c, err := api.New(api.Options{BaseURL: url, RetryMax: -1, RequestTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	a := &agentRun{done: make(chan error, 1)}
	a.loop, err = heartbeat.New(heartbeat.Config{
		Client: c, URL: url, StateDir: dir, Proof: proof,
		Register: api.RegisterRequest{AgentVersion: "e2e", BootID: "boot-" + filepath.Base(dir)},
		Snapshot: func() api.HeartbeatRequest {
			return api.HeartbeatRequest{AgentVersion: "e2e", Tunnel: &api.TunnelStatus{ID: tunnel, ReadyConnections: 4},
				Units: []api.UnitStatus{{Name: "cloudflared", State: api.UnitReady}}}
		},
		OnReply:    func(api.HeartbeatResponse) { a.beats.Add(1) },
		OnGone:     func() { a.gone.Store(true) },
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	go func() { a.done <- a.loop.Run(ctx) }()
	t.Cleanup(a.stop)
	return a
}

func (a *agentRun) stop() {
	if a.cancel != nil {
		a.cancel()
		<-a.done
		a.cancel = nil
	}
}

func offlineEvents(t *testing.T, admin *api.Client, host string, since time.Time) int {
	t.Helper()
	evs, err := admin.Events(context.Background(), host)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range evs {
		if e.Type == api.EventOffline && !e.At.Before(since) {
			n++
		}
	}
	return n
}

func TestEndToEnd(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ca := attesttest.NewCA(t, "us-east-1")
	certFile, tokFile := filepath.Join(dir, "aws.pem"), filepath.Join(dir, "admin-token")
	if err := os.WriteFile(certFile, ca.PEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	const adminTok = "e2e-admin-token-0123456789"
	if err := os.WriteFile(tokFile, []byte(adminTok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	url := "http://" + addr
	args := []string{"serve", "--listen", addr, "--db", "sqlite://" + filepath.Join(dir, "cp.db"), "--admin-token-file", tokFile,
		"--aws-cert", certFile, "--interval", interval.String(), "--grace", grace.String(), "--flush-window", "1s", "--host-rate", "20"}
	cp := startBinary(t, args...)
	waitHealthy(t, url)
	admin, _ := api.New(api.Options{BaseURL: url, AdminToken: secret.New(adminTok)})

	// An EC2 host (IMDS proof) and an enrolled host.
	if err := admin.DeclareInstance(ctx, api.Declaration{InstanceID: "i-0e2e", Org: "acme", Role: "tenant", Channel: "stable"}); err != nil {
		t.Fatal(err)
	}
	imds := func(context.Context) (api.Proof, error) {
		return api.Proof{IdentityPKCS7: ca.Sign(t, attesttest.Doc("i-0e2e", time.Now().Add(-time.Minute)))}, nil
	}
	tok, err := admin.CreateEnrollmentToken(ctx, api.EnrollmentTokenRequest{Org: "acme", Role: "workspace"})
	if err != nil {
		t.Fatal(err)
	}
	enroll := func(context.Context) (api.Proof, error) {
		return api.Proof{EnrollmentToken: secret.New(tok.Token), MachineID: "machine-e2e"}, nil
	}
	ec2 := startAgent(t, url, filepath.Join(dir, "ec2"), imds, "tun-ec2")
	ws := startAgent(t, url, filepath.Join(dir, "ws"), enroll, "tun-ws")
	eventually(t, testenv.Short, "both agents heartbeating", func() bool { return ec2.beats.Load() >= 2 && ws.beats.Load() >= 2 })

	hosts, err := admin.ListHosts(ctx, api.HostFilter{Status: api.StatusOnline})
	if err != nil || len(hosts) != 2 {
		t.Fatalf("online hosts = %d, %v; want 2", len(hosts), err)
	}
	ec2ID, wsID := ec2.loop.Status().HostID, ws.loop.Status().HostID

	// Kill the workspace agent: offline within 3 intervals + grace (the
	// sweeper runs every second, so allow one more second).
	ws.stop()
	eventually(t, 3*interval+grace+3*time.Second, "the silent host offline", func() bool {
		h, err := admin.GetHost(ctx, wsID)
		return err == nil && h.Status == api.StatusOffline
	})
	h, _ := admin.GetHost(ctx, wsID)
	evs, _ := admin.Events(ctx, wsID)
	off := evs[len(evs)-1]
	if off.Type != api.EventOffline {
		t.Fatalf("last event = %+v, want offline", off)
	}
	detect := off.At.Sub(h.LastSeen)
	t.Logf("offline detected %s after the last heartbeat (3 intervals + grace = %s)", detect, 3*interval+grace)
	if detect < 3*interval+grace || detect > 3*interval+grace+2*time.Second {
		t.Errorf("offline %s after the last heartbeat, want within [%s, %s]", detect, 3*interval+grace, 3*interval+grace+2*time.Second)
	}

	// Restart the control plane while the EC2 agent is also silent for
	// longer than a window: after the restart nobody is marked offline
	// during the first window, and the agent picks up again.
	ec2.stop()
	cp.term()
	time.Sleep(3*interval + grace + time.Second) // the scenario: a long outage
	restarted := time.Now()
	startBinary(t, args...)
	waitHealthy(t, url)
	// Its last heartbeat is older than a window, yet two sweeps later it is
	// still online: the control plane counts silence from its own start.
	time.Sleep(2 * interval)
	if h, _ := admin.GetHost(ctx, ec2ID); h.Status != api.StatusOnline {
		t.Errorf("silent EC2 host 2s after the restart = %s, want online", h.Status)
	}
	ec2b := startAgent(t, url, filepath.Join(dir, "ec2"), imds, "tun-ec2")
	eventually(t, testenv.Short, "heartbeats after the restart", func() bool { return ec2b.beats.Load() >= 2 })
	time.Sleep(3*interval + grace + time.Second) // one full window after the restart
	if n := offlineEvents(t, admin, ec2ID, restarted); n != 0 {
		t.Errorf("%d offline events for the EC2 host after the restart, want 0", n)
	}
	if h, _ := admin.GetHost(ctx, ec2ID); h.Status != api.StatusOnline {
		t.Errorf("EC2 host after restart = %s, want online", h.Status)
	}
	if ec2b.loop.Status().HostID != ec2ID {
		t.Errorf("EC2 host ID changed across restarts")
	}

	// Deprovision: the response holds the tunnel ID, the agent gets 410.
	dep, err := admin.Deprovision(ctx, ec2ID)
	if err != nil || dep.TunnelID != "tun-ec2" {
		t.Fatalf("deprovision = %+v, %v; want tunnel tun-ec2", dep, err)
	}
	eventually(t, testenv.Short, "the agent told it is gone", ec2b.gone.Load)
}
