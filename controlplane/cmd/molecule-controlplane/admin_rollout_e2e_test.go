package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/container"
	"github.com/molecule-ai/molecule-agent/agent/container/containertest"
	"github.com/molecule-ai/molecule-agent/agent/identity/imdstest"
	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
	"github.com/molecule-ai/molecule-agent/controlplane/events"
	"github.com/molecule-ai/molecule-agent/controlplane/rollout"
)

// realAgent is the molecule-agent binary running one host.
type realAgent struct {
	cmd  *exec.Cmd
	log  *syncLog
	done chan struct{}
}

// syncLog is a process's output, written and read concurrently.
type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func freePortNum(t *testing.T) int {
	t.Helper()
	_, p, _ := strings.Cut(freeAddr(t), ":")
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func buildAgent(t *testing.T) string {
	t.Helper()
	bin, err := testenv.GoBuild(t.TempDir(), "molecule-agent", testenv.AgentPackage)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// appOf returns the host's "app" unit as the control plane last saw it.
func appOf(h api.Host) (api.UnitStatus, []api.UpdateStatus) {
	if h.Report == nil {
		return api.UnitStatus{}, nil
	}
	for _, u := range h.Report.Units {
		if u.Name == "app" {
			return u, h.Report.Updates
		}
	}
	return api.UnitStatus{}, h.Report.Updates
}

// TestRolloutAcceptance is issue 9's acceptance: three real agents (EC2
// identity from a fake IMDS each, a container unit from a local registry)
// on channel stable. A healthy digest goes to the canary, then the rest;
// the rollout completes. A never-ready digest is rolled back by the canary,
// the rollout halts, and the other two hosts never pull it.
func TestRolloutAcceptance(t *testing.T) {
	testenv.RequireDocker(t)
	ctx := context.Background()
	cli := containertest.Docker(t)
	reg := containertest.NewRegistry(t)
	apps := reg.PushApps(t)
	agentBin := buildAgent(t)
	dir := t.TempDir()
	runID := containertest.RunID()

	const adminTok = "rollout-e2e-admin-token-0123456789"
	tokFile := filepath.Join(dir, "admin-token")
	if err := os.WriteFile(tokFile, []byte(adminTok), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	url := "http://" + addr
	args := []string{"serve", "--listen", addr, "--db", "sqlite://" + filepath.Join(dir, "cp.db"), "--admin-token-file", tokFile,
		"--interval", "1s", "--flush-window", "1s", "--rollout-bake", "2s", "--rollout-wave-timeout", "90s"}
	type host struct {
		instance string
		imds     *imdstest.Server
		dir      string
		port     int
	}
	var hosts []*host
	for i := range 3 {
		h := &host{instance: fmt.Sprintf("i-0rollout%d", i), dir: filepath.Join(dir, fmt.Sprint(i)), port: freePortNum(t)}
		h.imds = imdstest.New(t, imdstest.Instance{InstanceID: h.instance, PendingTime: time.Now()})
		pem := filepath.Join(dir, fmt.Sprintf("aws-%d.pem", i))
		if err := os.WriteFile(pem, h.imds.CAPEM(), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--aws-cert", pem)
		hosts = append(hosts, h)
	}
	cp := startBinary(t, args...)
	waitHealthy(t, url)
	admin, _ := api.New(api.Options{BaseURL: url, AdminToken: secret.New(adminTok)})
	if err := admin.SetChannelImages(ctx, "stable", map[string]string{"app": apps.V1}); err != nil {
		t.Fatal(err)
	}
	agents := map[string]*realAgent{} // by instance
	for i, h := range hosts {
		if err := admin.DeclareInstance(ctx, api.Declaration{InstanceID: h.instance, Org: "acme", Role: api.RoleTenant, Channel: "stable"}); err != nil {
			t.Fatal(err)
		}
		agentID := fmt.Sprintf("%s-%d", runID, i)
		containertest.CleanupLabel(t, cli, container.LabelAgent, agentID, "")
		if err := os.MkdirAll(h.dir+"/state", 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(h.dir+"/state/agent-id", []byte(agentID), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := fmt.Sprintf(`state_dir: %[1]s/state
run_dir: %[1]s/run
identity: {imds_endpoint: %[2]s}
control_plane: {url: %[3]s, org: acme}
updates: {window: 8s}
units:
  - name: app
    kind: container
    container:
      image: %[4]s
      ports: ["127.0.0.1:%[5]d:8080"]
      update: auto
    ready: {http: "http://127.0.0.1:%[5]d/health", status: 200, interval: 200ms}
    stop: {grace: 2s}
`, h.dir, h.imds.URL, url, apps.V1, h.port)
		path := filepath.Join(h.dir, "agent.yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		a := &realAgent{log: &syncLog{}, done: make(chan struct{})}
		a.cmd = exec.Command(agentBin, "run", "--config", path)
		a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
		if err := a.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { _ = a.cmd.Wait(); close(a.done) }()
		t.Cleanup(func() {
			_ = a.cmd.Process.Kill()
			<-a.done
			if t.Failed() {
				t.Logf("agent %s log:\n%s", h.instance, a.log.String())
			}
		})
		agents["ec2:"+h.instance] = a
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("control plane log:\n%s", cp.stderr.String())
		}
	})
	list := func() []api.Host {
		hs, err := admin.ListHosts(ctx, api.HostFilter{Channel: "stable"})
		if err != nil {
			t.Fatal(err)
		}
		return hs
	}
	onImage := func(img string) func() bool {
		return func() bool {
			hs := list()
			n := 0
			for _, h := range hs {
				if u, _ := appOf(h); u.State == api.UnitReady && u.Image == img && h.Status == api.StatusOnline {
					n++
				}
			}
			return len(hs) == 3 && n == 3
		}
	}
	eventually(t, 2*testenv.Long, "three hosts online, app ready on v1", onImage(apps.V1))
	byID := map[string]*realAgent{}
	for _, h := range list() {
		byID[h.ID] = agents[h.InstanceKey]
	}

	cmd := func(args ...string) string {
		t.Helper()
		var out strings.Builder
		if err := run(ctx, append(args, "--url", url, "--admin-token-file", tokFile), env{}, &out); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return out.String()
	}
	status := func() rollout.Rollout {
		c, _ := (&adminOpts{url: url, tokenFile: tokFile}).client(env{})
		r, err := c.GetRollout(ctx, "stable")
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	// 1. A healthy digest: canary first, then the others, completed.
	cmd("release", "set", "stable", "app="+apps.V2, "--canary", "1", "--batch-percent", "25")
	r := status()
	if len(r.Waves) != 3 {
		t.Fatalf("waves = %+v, want 3 of one host", r.Waves)
	}
	canary := r.Waves[0].Hosts[0]
	// While the canary bakes, the others stay on v1 and are not told v2.
	for status().Current == 0 {
		for _, h := range list() {
			if u, _ := appOf(h); h.ID != canary && u.Image != apps.V1 {
				t.Fatalf("host %s runs %s while the canary is still baking", h.ID, u.Image)
			}
		}
		time.Sleep(100 * time.Millisecond) // polling
	}
	eventually(t, 2*testenv.Long, "rollout completed", func() bool { return status().State == rollout.StateCompleted })
	eventually(t, testenv.Short, "every host ready on v2", onImage(apps.V2))
	r = status()
	for i := 1; i < len(r.Waves); i++ {
		if r.Waves[i].StartedAt.Before(r.Waves[i-1].DoneAt) {
			t.Errorf("wave %d started %s, before wave %d was done %s", i+1, r.Waves[i].StartedAt, i, r.Waves[i-1].DoneAt)
		}
	}
	t.Logf("healthy rollout: %s", strings.TrimSpace(cmd("release", "status", "stable")))

	// 2. A never-ready digest: the canary rolls back, the rollout halts,
	// the others never pull it.
	cmd("release", "set", "stable", "app="+apps.V3, "--canary", "1", "--batch-percent", "25")
	canary = status().Waves[0].Hosts[0]
	eventually(t, 2*testenv.Long, "rollout halted", func() bool { return status().State == rollout.StateHalted })
	r = status()
	if !strings.Contains(r.Reason, canary) || !strings.Contains(r.Reason, "rolled back") {
		t.Errorf("halt reason %q, want the canary %s rolling back", r.Reason, canary)
	}
	eventually(t, testenv.Short, "the canary back on v2", onImage(apps.V2))
	time.Sleep(3 * time.Second) // a few more heartbeats: nobody else moves
	for _, h := range list() {
		u, ups := appOf(h)
		if u.Image != apps.V2 {
			t.Errorf("host %s runs %s after the halt, want v2", h.ID, u.Image)
		}
		pulled := strings.Contains(byID[h.ID].log.String(), apps.V3)
		if h.ID == canary {
			if !pulled || !slices.ContainsFunc(ups, func(up api.UpdateStatus) bool { return up.Phase == "rolled_back" }) {
				t.Errorf("canary %s: tried v3 %v, updates %+v; want it tried and rolled back", h.ID, pulled, ups)
			}
		} else if pulled {
			t.Errorf("host %s was given v3 though the rollout halted at the canary", h.ID)
		}
	}
	// The events record it.
	eventually(t, testenv.Short, "events flushed", func() bool {
		out := cmd("events", "--limit", "1000")
		return strings.Contains(out, events.KindRolloutHalted) && strings.Contains(out, events.KindUpdateRolledBack) &&
			strings.Contains(out, events.KindRolloutCompleted) && strings.Contains(out, events.KindUpdateCommitted)
	})
	// 3. Rolled back: the channel serves v2 again.
	cmd("release", "rollback", "stable", "--reason", "v3 never ready")
	if r := status(); r.State != rollout.StateRolledBack || r.From["app"] != apps.V2 {
		t.Errorf("after rollback: %s from %v", r.State, r.From)
	}
	cp.term()
}
