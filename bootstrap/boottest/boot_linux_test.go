//go:build unix

package boottest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/status"
	"github.com/molecule-ai/molecule-agent/agent/tunnel/tunneltest"
	"github.com/molecule-ai/molecule-agent/bootstrap"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

// unitsYAML is what an AMI would bake as /etc/molecule-agent/units.yaml:
// the workspace role's runtime replaced by busybox httpd serving the agent
// card (ready on the same probe as the real runtime), plus a worker. Both
// trap SIGTERM and leave a marker, to prove a graceful stop.
const unitsYAML = `units:
  - name: runtime
    builtin: ""
    user: root
    command: /bin/sh
    args: ["-c", "trap 'echo graceful > /var/lib/boottest/runtime.stopped; kill $pid; exit 0' TERM; busybox httpd -f -p 127.0.0.1:8000 -h /srv/www & pid=$!; wait $pid"]
    env: {}
    files: []
    ready: {http: "http://127.0.0.1:8000/.well-known/agent-card.json", status: 200, interval: 200ms}
    stop: {grace: 10s}
  - name: worker
    command: /bin/sh
    args: ["-c", "trap 'echo graceful > /var/lib/boottest/worker.stopped; exit 0' TERM; while :; do sleep 1 & wait $!; done"]
    after: [runtime]
    stop: {grace: 10s}
`

// brokenYAML is a unit that exits with a code that means "do not restart".
const brokenYAML = unitsYAML + `  - name: broken
    command: /bin/sh
    args: ["-c", "echo cannot start; exit 3"]
    restart: {no_restart_exit_codes: [3]}
`

func TestBootInNspawn(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "systemd-nspawn")
	testenv.RequireBinary(t, "debootstrap")
	testenv.RequireBinary(t, "nsenter")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	lower := rootfs(t)
	deb := buildDeb(t)
	m := newMachine(t, lower)
	m.write("/var/tmp/molecule-agent.deb", mustRead(t, deb), 0o644)
	m.runInRoot("dpkg", "-i", "/var/tmp/molecule-agent.deb")
	m.write("/etc/molecule-agent/units.yaml", []byte(unitsYAML), 0o644)
	m.write("/srv/www/.well-known/agent-card.json", []byte(`{"name":"boottest"}`), 0o644)
	if err := os.MkdirAll(filepath.Join(m.root, "var/lib/boottest"), 0o755); err != nil {
		t.Fatal(err)
	}
	bootStart := time.Now()
	m.boot(ctx)
	t.Logf("container booted in %s", time.Since(bootStart).Round(time.Millisecond))
	if got, _ := m.exec(ctx, "systemctl", "is-enabled", "molecule-agent.service"); got != "disabled" {
		t.Errorf("after dpkg -i the agent is %q, want disabled: the package must not enable or start anything", got)
	}

	// The control plane runs on the host end of the container's veth.
	cp := startControlPlane(t, ctx, m)
	if out, err := m.exec(ctx, "bash", "-c", "exec 3<>/dev/tcp/"+strings.ReplaceAll(strings.TrimPrefix(cp.url, "https://"), ":", "/")); err != nil {
		t.Fatalf("container cannot reach the control plane at %s over its veth: %v\n%s", cp.url, err, out)
	}
	// The provisioner places the enrollment token; user-data only names it.
	cp.enroll(t, m, bootstrap.DefaultEnrollmentTokenFile)
	p := bootstrap.Params{Role: "workspace", Org: "dev", Workspace: "ws-boot", PlatformURL: "http://127.0.0.1:8080",
		Identity: bootstrap.IdentityEnrollment, ControlPlane: cp.url, ControlPlaneCA: controlPlaneCA, UnitsFile: "/etc/molecule-agent/units.yaml"}
	userData, err := bootstrap.RenderUserData(p)
	if err != nil {
		t.Fatal(err)
	}
	m.write("/var/lib/cloud/instance/user-data.txt", []byte(userData), 0o700)

	// First boot: everything is done and reported.
	start := time.Now()
	out, err := m.exec(ctx, "/var/lib/cloud/instance/user-data.txt")
	took := time.Since(start)
	if err != nil {
		t.Fatalf("user-data failed: %v\n%s\njournal:\n%s", err, out, m.journal(ctx))
	}
	t.Logf("bootstrap output:\n%s", out)
	t.Logf("BENCH bootstrap_to_registered_ms=%d bootstrap_to_ready_ms=%d",
		phasesUpTo(t, out, "registered").Milliseconds(), took.Milliseconds())
	for _, phase := range []string{"boot params", "boot config", "boot service", "boot agent running", "boot registered", "boot units ready", "MOLECULE AGENT BOOT OK"} {
		if !strings.Contains(out, phase) {
			t.Errorf("bootstrap output lacks %q", phase)
		}
	}
	if strings.Contains(out, bootstrap.FailedPrefix) {
		t.Errorf("a successful boot printed %q", bootstrap.FailedPrefix)
	}
	if got := m.must(ctx, "systemctl", "is-active", "molecule-agent.service"); got != "active" {
		t.Fatalf("systemctl is-active molecule-agent = %q, want active", got)
	}
	if got := m.must(ctx, "systemctl", "is-enabled", "molecule-agent.service"); got != "enabled" {
		t.Errorf("systemctl is-enabled molecule-agent = %q, want enabled", got)
	}
	if got := m.must(ctx, "stat", "-c", "%a", "/etc/molecule-agent/agent.yaml"); got != "644" {
		t.Errorf("agent.yaml mode %s, want 644", got)
	}
	m.unitsReady(ctx)
	pid1 := m.mainPID(ctx)
	hostID := cp.checkOneHost(t, ctx)
	if !strings.Contains(out, "host "+hostID) {
		t.Errorf("bootstrap did not report host %s:\n%s", hostID, out)
	}
	cp.noTokenIn(t, "bootstrap output", out)
	agentYAML := m.must(ctx, "cat", "/etc/molecule-agent/agent.yaml")
	cp.noTokenIn(t, "agent.yaml", agentYAML)
	// Registered over TLS, pinning the provisioned CA.
	if !strings.Contains(agentYAML, "url: "+cp.url) || !strings.Contains(agentYAML, "ca_file: "+controlPlaneCA) {
		t.Errorf("agent.yaml does not pin the control plane's CA over https:\n%s", agentYAML)
	}
	cp.noTokenIn(t, "user-data", userData)

	// Second run on a booted host: changes nothing, succeeds.
	out = m.must(ctx, "/var/lib/cloud/instance/user-data.txt")
	for _, want := range []string{"agent.yaml unchanged", "molecule-agent.service unchanged", "already running", "MOLECULE AGENT BOOT OK"} {
		if !strings.Contains(out, want) {
			t.Errorf("second bootstrap lacks %q:\n%s", want, out)
		}
	}
	if pid := m.mainPID(ctx); pid != pid1 {
		t.Errorf("second bootstrap restarted the agent (pid %d -> %d)", pid1, pid)
	}

	// A unit file edited by hand is put back and the agent restarted.
	unitFile := "/etc/systemd/system/molecule-agent.service"
	shipped := m.must(ctx, "cat", unitFile)
	m.must(ctx, "sh", "-c", "sed -i 's/^RestartSec=1s/RestartSec=120/' "+unitFile+" && systemctl daemon-reload")
	out = m.must(ctx, "/var/lib/cloud/instance/user-data.txt")
	if !strings.Contains(out, "molecule-agent.service installed and enabled") || !strings.Contains(out, "started, ") {
		t.Errorf("edited unit not reinstalled and restarted:\n%s", out)
	}
	if got := m.must(ctx, "cat", unitFile); got != shipped {
		t.Errorf("unit file after bootstrap differs from the one it installed first")
	}
	if got, _ := m.exec(ctx, "systemctl", "show", "-p", "RestartUSec", "--value", "molecule-agent.service"); got != "1s" {
		t.Errorf("RestartSec in effect = %q, want 1s", got)
	}
	m.unitsReady(ctx)
	pid1 = m.mainPID(ctx)

	// kill -9: systemd restarts it (RestartSec=1s) and the units come back.
	killed := time.Now()
	if err := killInside(m, pid1); err != nil {
		t.Fatal(err)
	}
	var pid2 int
	if err := eventually(testenv.Long, func() error {
		pid2 = m.mainPID(ctx)
		if pid2 == 0 || pid2 == pid1 {
			return errTimeout
		}
		if s, _ := m.exec(ctx, "systemctl", "is-active", "molecule-agent.service"); s != "active" {
			return errTimeout
		}
		return nil
	}); err != nil {
		t.Fatalf("agent not restarted after kill -9: %v\n%s", err, m.journal(ctx))
	}
	t.Logf("BENCH kill9_to_active_ms=%d (RestartSec=1s included)", time.Since(killed).Milliseconds())
	m.unitsReady(ctx)
	// Same host, registered once: the agent reuses its saved host token.
	if err := eventually(testenv.Long, func() error {
		if s, _ := m.exec(ctx, "molecule-agent", "status", "--json"); !strings.Contains(s, hostID) {
			return errTimeout
		}
		return nil
	}); err != nil {
		t.Errorf("restarted agent does not report host %s: %v", hostID, err)
	}
	if id := cp.checkOneHost(t, ctx); id != hostID {
		t.Errorf("host ID changed after kill -9: %s -> %s", hostID, id)
	}

	// A changed flag rewrites the config and restarts the agent.
	p.Channel = "staging"
	ud2, err := bootstrap.RenderUserData(p)
	if err != nil {
		t.Fatal(err)
	}
	m.write("/var/lib/cloud/instance/user-data.txt", []byte(ud2), 0o700)
	out = m.must(ctx, "/var/lib/cloud/instance/user-data.txt")
	if !strings.Contains(out, "agent.yaml written") || !strings.Contains(out, "started, ") {
		t.Errorf("changed channel did not rewrite and restart:\n%s", out)
	}
	if pid3 := m.mainPID(ctx); pid3 == pid2 {
		t.Errorf("agent not restarted after the config changed (pid %d)", pid3)
	}
	if cfg := m.must(ctx, "cat", "/etc/molecule-agent/agent.yaml"); !strings.Contains(cfg, "channel: staging") {
		t.Errorf("agent.yaml lacks the new channel:\n%s", cfg)
	}
	m.unitsReady(ctx)
	if id := cp.checkOneHost(t, ctx); id != hostID {
		t.Errorf("host ID changed after a config change: %s -> %s", hostID, id)
	}
	watchdogRestartsAWedgedAgent(t, ctx, m)
	for _, u := range []string{"runtime", "worker"} {
		_, _ = m.exec(ctx, "rm", "-f", "/var/lib/boottest/"+u+".stopped")
	}

	// systemctl stop: every unit gets SIGTERM and stops within its grace.
	stopStart := time.Now()
	m.must(ctx, "systemctl", "stop", "molecule-agent.service")
	t.Logf("systemctl stop took %s", time.Since(stopStart).Round(time.Millisecond))
	if got, _ := m.exec(ctx, "systemctl", "is-active", "molecule-agent.service"); got != "inactive" {
		t.Errorf("after stop: is-active = %q, want inactive", got)
	}
	for _, u := range []string{"runtime", "worker"} {
		if got, err := m.exec(ctx, "cat", "/var/lib/boottest/"+u+".stopped"); err != nil || got != "graceful" {
			t.Errorf("unit %s did not stop gracefully (marker %q, %v)\n%s", u, got, err, m.journal(ctx))
		}
	}
	if got, _ := m.exec(ctx, "pgrep", "-f", "busybox httpd|/var/lib/boottest"); got != "" {
		t.Errorf("unit processes left after stop: %s", got)
	}
	if res, _ := m.exec(ctx, "systemctl", "show", "-p", "Result", "--value", "molecule-agent.service"); res != "success" {
		t.Errorf("service result after stop = %q, want success (no SIGKILL, no timeout)", res)
	}

	// A failing boot: one FAILED line with the reason, exit non-zero.
	m.write("/etc/molecule-agent/broken.yaml", []byte(brokenYAML), 0o644)
	p.UnitsFile = "/etc/molecule-agent/broken.yaml"
	ud3, err := bootstrap.RenderUserData(p)
	if err != nil {
		t.Fatal(err)
	}
	m.write("/var/lib/cloud/instance/user-data.txt", []byte(ud3), 0o700)
	out, err = m.exec(ctx, "/var/lib/cloud/instance/user-data.txt")
	if err == nil {
		t.Errorf("bootstrap with a failing unit exited 0:\n%s", out)
	}
	var failed []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, bootstrap.FailedPrefix) {
			failed = append(failed, l)
		}
	}
	if len(failed) != 1 || !strings.Contains(failed[0], "unit broken failed") {
		t.Errorf("want one %q line naming unit broken, got:\n%s", bootstrap.FailedPrefix, out)
	}
	t.Logf("failing bootstrap output:\n%s", out)

	// No token anywhere a person or a log collector reads.
	full, _ := m.exec(ctx, "journalctl", "--no-pager", "-o", "cat")
	cp.noTokenIn(t, "the container's journal", full)
	st, _ := m.exec(ctx, "molecule-agent", "status", "--json")
	cp.noTokenIn(t, "agent status", st)
}

// phasesUpTo sums the durations bootstrap printed for its phases up to and
// including last ("boot <phase> <duration>  <detail>").
func phasesUpTo(t *testing.T, out, last string) time.Duration {
	t.Helper()
	var total time.Duration
	for _, l := range strings.Split(out, "\n") {
		rest, ok := strings.CutPrefix(l, "boot ")
		if !ok {
			continue
		}
		for _, phase := range []string{"params", "secrets", "config", "service", "agent running", "registered", "units ready"} {
			after, ok := strings.CutPrefix(rest, phase+" ")
			if !ok {
				continue
			}
			f := strings.Fields(after)
			if len(f) == 0 {
				t.Fatalf("bad phase line %q", l)
			}
			d, err := time.ParseDuration(f[0])
			if err != nil {
				t.Fatalf("phase line %q: %v", l, err)
			}
			total += d
			if phase == last {
				return total
			}
		}
	}
	t.Fatalf("no phase %q in:\n%s", last, out)
	return 0
}

// unitsReady polls the agent's status socket inside the container until
// every unit is ready.
func (m *machine) unitsReady(ctx context.Context) {
	m.t.Helper()
	var last string
	if err := eventually(testenv.Long, func() error {
		out, err := m.exec(ctx, "molecule-agent", "status", "--json")
		if err != nil {
			last = out
			return errTimeout
		}
		var r status.Report
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			last = out
			return err
		}
		if len(r.Units) != 2 {
			last = out
			return errTimeout
		}
		for _, u := range r.Units {
			if !u.Ready {
				last = out
				return errTimeout
			}
		}
		return nil
	}); err != nil {
		m.t.Fatalf("units not ready: %v\nlast status:\n%s", err, last)
	}
}

func (m *machine) mainPID(ctx context.Context) int {
	out, _ := m.exec(ctx, "systemctl", "show", "-p", "MainPID", "--value", "molecule-agent.service")
	n, _ := strconv.Atoi(out)
	return n
}

func (m *machine) journal(ctx context.Context) string {
	out, _ := m.exec(ctx, "journalctl", "-u", "molecule-agent", "-n", "40", "--no-pager", "-o", "cat")
	return out
}

// killInside sends SIGKILL to a process of the container by its PID there.
func killInside(m *machine, pid int) error {
	if out, err := m.exec(context.Background(), "kill", "-9", strconv.Itoa(pid)); err != nil {
		return fmt.Errorf("kill -9 %d in the container: %v: %s", pid, err, out)
	}
	return nil
}

// buildDeb builds the agent from this tree and the .deb around it with
// packaging/deb/build.sh, into a temporary directory.
func buildDeb(t *testing.T) string {
	t.Helper()
	root := repoRoot(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=0.0.0-boottest",
		"-o", filepath.Join(bin, "molecule-agent"), "./agent/cmd/molecule-agent")
	build.Dir, build.Env = root, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build agent: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(bin, "cloudflared"), mustRead(t, tunneltest.Binary(t)), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "dist")
	cmd := exec.Command(filepath.Join(root, "packaging/deb/build.sh"), "0.0.0-boottest")
	cmd.Dir, cmd.Env = root, append(os.Environ(), "BIN_DIR="+bin, "OUT_DIR="+out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build .deb: %v\n%s", err, b)
	}
	debs, _ := filepath.Glob(filepath.Join(out, "*.deb"))
	if len(debs) != 1 {
		t.Fatalf("want one .deb in %s, got %v", out, debs)
	}
	return debs[0]
}

// watchdogRestartsAWedgedAgent runs the agent built with -tags testhooks
// (agent/supervisor/wedge_testhooks.go: SIGUSR2 wedges the supervisor's main
// loop; a production build has no such hook) under a drop-in with a short
// WatchdogSec, wedges it, and expects systemd's watchdog to restart it.
// The drop-in is removed and the shipped agent restarted afterwards.
func watchdogRestartsAWedgedAgent(t *testing.T, ctx context.Context, m *machine) {
	t.Helper()
	m.write("/usr/local/bin/molecule-agent-testhooks", mustRead(t, buildAgent(t, "testhooks")), 0o755)
	dropIn := "/etc/systemd/system/molecule-agent.service.d/testhooks.conf"
	m.write(dropIn, []byte("[Service]\nExecStart=\nExecStart=/usr/local/bin/molecule-agent-testhooks run --config /etc/molecule-agent/agent.yaml\nWatchdogSec=3s\n"), 0o644)
	m.must(ctx, "sh", "-c", "systemctl daemon-reload && systemctl restart molecule-agent.service")
	m.unitsReady(ctx)
	pid := m.mainPID(ctx)
	if exe := m.must(ctx, "readlink", "/proc/"+strconv.Itoa(pid)+"/exe"); exe != "/usr/local/bin/molecule-agent-testhooks" {
		t.Fatalf("agent runs %s, want the testhooks build", exe)
	}
	// Still pinging while the loop turns: alive after several watchdog periods.
	m.must(ctx, "sleep", "7")
	if p := m.mainPID(ctx); p != pid {
		t.Fatalf("the agent was restarted (pid %d -> %d) while its loop turned:\n%s", pid, p, m.journal(ctx))
	}
	m.must(ctx, "kill", "-USR2", strconv.Itoa(pid))
	wedged := time.Now()
	if err := eventually(testenv.Long, func() error {
		if p := m.mainPID(ctx); p == 0 || p == pid {
			return errTimeout
		}
		return nil
	}); err != nil {
		t.Fatalf("wedged agent not restarted: %v\n%s", err, m.journal(ctx))
	}
	t.Logf("BENCH wedge_to_restart_ms=%d (WatchdogSec=3s)", time.Since(wedged).Milliseconds())
	if out, err := m.exec(ctx, "sh", "-c", "journalctl -u molecule-agent --no-pager -o cat | grep 'Watchdog timeout'"); err != nil {
		t.Errorf("the restart was not systemd's watchdog (%v %s):\n%s", err, out, m.journal(ctx))
	}
	m.must(ctx, "sh", "-c", "rm "+dropIn+" && systemctl daemon-reload && systemctl restart molecule-agent.service")
	m.unitsReady(ctx)
}

// buildAgent builds the agent from this tree with the given build tags.
func buildAgent(t *testing.T, tags string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "molecule-agent")
	build := exec.Command("go", "build", "-trimpath", "-tags", tags, "-o", bin, "./agent/cmd/molecule-agent")
	build.Dir, build.Env = repoRoot(t), append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build agent -tags %s: %v\n%s", tags, err, out)
	}
	return bin
}

func repoRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
