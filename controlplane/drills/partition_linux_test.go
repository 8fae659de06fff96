package drills

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/status"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

// The partition drill runs at a 5 s interval: the agent's TCP and HTTP
// timeouts (SYN retransmits, 10 s per attempt) do not scale down.
const (
	partInterval = 5 * time.Second
	partGrace    = time.Second
	partWindow   = 3*partInterval + partGrace
	sweepTick    = partInterval / 10 // how often the sweeper looks
)

var (
	agentOnce sync.Once
	agentBin  string
	agentErr  error
)

// buildAgent builds the real molecule-agent once.
func buildAgent(t *testing.T) string {
	t.Helper()
	agentOnce.Do(func() {
		agentBin, agentErr = testenv.GoBuild(filepath.Dir(cpBin), "molecule-agent", testenv.AgentPackage)
	})
	if agentErr != nil {
		t.Fatal(agentErr)
	}
	return agentBin
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%v: %v: %s", args, err, out)
	}
}

// netns is a network namespace joined to the host by a veth pair.
type netns struct {
	name, nsIf, hostIP string
}

func newNetns(t *testing.T) *netns {
	t.Helper()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	n := &netns{name: "drill-" + id, nsIf: "dn" + id, hostIP: fmt.Sprintf("10.213.%d.1", b[0])}
	hostIf := "dh" + id
	run(t, "ip", "netns", "add", n.name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", n.name).Run() })
	run(t, "ip", "link", "add", hostIf, "type", "veth", "peer", "name", n.nsIf, "netns", n.name)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", hostIf).Run() })
	run(t, "ip", "addr", "add", n.hostIP+"/30", "dev", hostIf)
	run(t, "ip", "link", "set", hostIf, "up")
	run(t, "ip", "-n", n.name, "addr", "add", fmt.Sprintf("10.213.%d.2/30", b[0]), "dev", n.nsIf)
	run(t, "ip", "-n", n.name, "link", "set", n.nsIf, "up")
	run(t, "ip", "-n", n.name, "link", "set", "lo", "up")
	return n
}

// cut drops every packet on the namespace's veth (inside the namespace:
// the host's firewall is untouched); heal removes the rules.
func (n *netns) cut(t *testing.T) {
	run(t, "ip", "netns", "exec", n.name, "iptables", "-I", "INPUT", "-i", n.nsIf, "-j", "DROP")
	run(t, "ip", "netns", "exec", n.name, "iptables", "-I", "OUTPUT", "-o", n.nsIf, "-j", "DROP")
}

func (n *netns) heal(t *testing.T) {
	run(t, "ip", "netns", "exec", n.name, "iptables", "-D", "INPUT", "-i", n.nsIf, "-j", "DROP")
	run(t, "ip", "netns", "exec", n.name, "iptables", "-D", "OUTPUT", "-o", n.nsIf, "-j", "DROP")
}

// TestPartitionedAgent: the real agent binary runs in its own network
// namespace; iptables cuts it off. Its units keep running; the control
// plane marks it offline after 3 intervals + grace of silence; after the
// cut heals it is online again within 2 intervals, without registering
// again.
func TestPartitionedAgent(t *testing.T) {
	testenv.RequireNetns(t)
	testenv.RequireBinary(t, "iptables")
	if testing.Short() {
		t.Skip("drill: about a minute at a 5 s interval")
	}
	bin := buildAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*testenv.Long)
	defer cancel()
	dir := t.TempDir()
	n := newNetns(t)
	ln, err := net.Listen("tcp", n.hostIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	tokFile, adminTok := adminToken(t, dir)
	c := newCP(t, "sqlite://"+filepath.Join(dir, "cp.db"), tokFile,
		"--interval", partInterval.String(), "--grace", partGrace.String(), "--flush-window", partInterval.String())
	c.addr = addr
	c.args[2] = addr // --listen
	c.useTLS(dir)    // the agent reaches it off loopback
	c.start()
	admin, err := api.New(api.Options{BaseURL: c.url(), AdminToken: adminTok, RootCAs: c.ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	enroll, err := admin.CreateEnrollmentToken(ctx, api.EnrollmentTokenRequest{Org: "drill", Role: api.RoleWorkspace})
	if err != nil {
		t.Fatal(err)
	}
	enrollFile := filepath.Join(dir, "enrollment-token")
	if err := os.WriteFile(enrollFile, []byte(enroll.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`state_dir: %[1]s/state
run_dir: %[1]s/run
identity: {mode: enrollment, enrollment_token: "file:%[2]s"}
control_plane: {url: %[3]s, org: drill, ca_file: %[1]s/ca.crt}
units:
  - name: web
    command: /bin/sleep
    args: ["1000"]
`, dir, enrollFile, c.url())
	cfgPath := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	agentLog := &lockedBuf{}
	agent := exec.Command("ip", "netns", "exec", n.name, bin, "run", "--config", cfgPath)
	agent.Stdout, agent.Stderr = agentLog, agentLog
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	agentDone := make(chan struct{})
	go func() { _ = agent.Wait(); close(agentDone) }()
	t.Cleanup(func() {
		_ = agent.Process.Signal(syscall.SIGTERM) // the agent stops its units
		select {
		case <-agentDone:
		case <-time.After(testenv.Short):
			_ = agent.Process.Kill()
			<-agentDone
		}
		if t.Failed() {
			t.Logf("agent log:\n%s\ncontrol plane log:\n%s", agentLog.String(), c.log.String())
		}
	})
	socket := filepath.Join(dir, "run", "agent.sock")
	web := func() (supervisor.UnitStatus, bool) {
		sctx, cancel := context.WithTimeout(ctx, testenv.Short)
		defer cancel()
		r, err := status.Get(sctx, socket)
		if err != nil {
			return supervisor.UnitStatus{}, false
		}
		for _, u := range r.Units {
			if u.Name == "web" {
				return u, true
			}
		}
		return supervisor.UnitStatus{}, false
	}
	var host api.Host
	eventually(t, testenv.Long, "the agent registered and online", func() bool {
		hs, err := admin.ListHosts(ctx, api.HostFilter{})
		if err != nil || len(hs) != 1 || hs[0].Status != api.StatusOnline {
			return false
		}
		host = hs[0]
		return true
	})
	var before supervisor.UnitStatus
	eventually(t, testenv.Long, "unit web ready", func() bool {
		u, ok := web()
		before = u
		return ok && u.State == supervisor.Ready && u.PID != 0
	})
	time.Sleep(2 * partInterval) // a few heartbeats (the scenario)

	cut := time.Now()
	n.cut(t)
	var offAt time.Time
	eventually(t, partWindow+partInterval+sweepTick+testenv.Short, "the partitioned host offline", func() bool {
		evs, err := admin.Events(ctx, host.ID)
		if err != nil {
			return false
		}
		for _, e := range evs {
			if e.Type == api.EventOffline && e.At.After(cut.Add(-partInterval)) {
				offAt = e.At
				return true
			}
		}
		return false
	})
	h, err := admin.GetHost(ctx, host.ID)
	if err != nil {
		t.Fatal(err)
	}
	silent := offAt.Sub(h.LastSeen)
	t.Logf("offline %s after its last heartbeat, %s after the cut (3 intervals + grace = %s)", silent.Round(time.Millisecond), offAt.Sub(cut).Round(time.Millisecond), partWindow)
	if silent < partWindow || silent > partWindow+sweepTick+500*time.Millisecond {
		t.Errorf("marked offline %s after the last heartbeat, want within [%s, %s + one sweep]", silent, partWindow, partWindow)
	}
	if u, ok := web(); !ok || u.State != supervisor.Ready || u.PID != before.PID || u.Restarts != before.Restarts {
		t.Errorf("unit web while partitioned = %+v (ok %v), want still running as pid %d", u, ok, before.PID)
	}

	time.Sleep(partInterval) // partitioned a while longer (the scenario)
	n.heal(t)
	healed := time.Now()
	eventually(t, 2*partInterval+testenv.Short, "the host online again", func() bool {
		h, err := admin.GetHost(ctx, host.ID)
		return err == nil && h.Status == api.StatusOnline
	})
	back := time.Since(healed)
	t.Logf("online again %s after the partition healed (2 intervals = %s)", back.Round(time.Millisecond), 2*partInterval)
	if back > 2*partInterval {
		t.Errorf("online again %s after healing, want within 2 intervals (%s)", back, 2*partInterval)
	}
	regs, err := countEvents(ctx, c, adminTok, api.EventRegistered, time.Time{})
	if err != nil || regs != 1 {
		t.Errorf("%d registrations (%v), want 1: a healed partition needs no new registration", regs, err)
	}
	if u, ok := web(); !ok || u.PID != before.PID || u.Restarts != before.Restarts {
		t.Errorf("unit web after healing = %+v, want the same process (pid %d)", u, before.PID)
	}
}
