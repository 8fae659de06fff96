//go:build unix

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/container"
	"github.com/molecule-ai/molecule-agent/agent/container/containertest"
	"github.com/molecule-ai/molecule-agent/agent/secretstore/ssmtest"
	"github.com/molecule-ai/molecule-agent/agent/status"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

// BenchmarkTenantRSS measures the agent's steady RSS on a tenant-shaped
// host: three container units (stand-ins for postgres, redis and the
// platform, from Go-built images), an exec unit, secrets from SSM, and a
// control plane it heartbeats to. `make bench-agent` runs it.
func BenchmarkTenantRSS(b *testing.B) {
	testenv.RequireDocker(b)
	cli := containertest.Docker(b)
	reg := containertest.NewRegistry(b)
	apps := reg.PushApps(b)
	runID := containertest.RunID()
	containertest.CleanupLabel(b, cli, container.LabelAgent, runID, reg.Host)
	ssm := ssmtest.New(b)
	for _, n := range []string{"postgres-password", "admin-token", "tunnel-token"} {
		ssm.PutSecure(prefix+"/"+n, n+"-value-0123456789")
	}
	dir := b.TempDir()
	cp := startCP(b, filepath.Join(dir, "cp"), "127.0.0.1:"+fmt.Sprint(freePort(b)))
	if err := os.MkdirAll(dir+"/state", 0o700); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(dir+"/state/agent-id", []byte(runID), 0o600); err != nil {
		b.Fatal(err)
	}
	units := ""
	for i, name := range []string{"postgres", "redis", "platform"} {
		port := freePort(b)
		units += fmt.Sprintf(`  - name: %s
    kind: container
    container: {image: %s, ports: ["127.0.0.1:%d:8080"], volumes: ["%s-%d:/data"]}
    env: {SECRET: "secret:admin-token"}
    ready: {http: "http://127.0.0.1:%d/health", interval: 1s}
`, name, apps.V1, port, runID, i, port)
	}
	cfg := fmt.Sprintf(`state_dir: %[1]s/state
run_dir: %[1]s/run
secrets: {source: ssm, prefix: %[2]s, region: %[3]s, endpoint: %[4]s}
identity: {mode: enrollment, enrollment_token: "file:%[1]s/cp/enrollment-token"}
control_plane: {url: %[5]s, org: dev}
units:
%[6]s  - name: tunnel
    command: /bin/sleep
    args: ["100000"]
    env: {TUNNEL_TOKEN: "secret:tunnel-token"}
`, dir, prefix, ssmtest.Region, ssm.URL, cp.url, units)
	env := []string{"PATH=/usr/bin:/bin",
		"AWS_ACCESS_KEY_ID=" + ssmtest.AccessKeyID, "AWS_SECRET_ACCESS_KEY=" + ssmtest.SecretAccessKey,
		"AWS_EC2_METADATA_DISABLED=true"}
	// The runtime's knobs and the profile directory reach the agent, so
	// GC settings can be measured (README "Performance").
	for _, k := range []string{"GOGC", "GOMEMLIMIT", "GODEBUG", "MOLECULE_AGENT_PROFILE_DIR"} {
		if v := os.Getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	a := runAgent(b, dir, writeConfig(b, dir, cfg), env)
	a.waitFor(b, "all ready and registered", func(r *status.Report) bool {
		for _, u := range r.Units {
			if !u.Ready {
				return false
			}
		}
		return len(r.Units) == 4 && section(r, "control_plane")["registered"] == true
	})
	time.Sleep(15 * time.Second) // steady: heartbeats, probes, a secrets refresh
	b.ReportMetric(float64(rssKiB(b, a.cmd.Process.Pid))/1024, "MiB-rss")
	if sm, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", a.cmd.Process.Pid)); err == nil {
		b.Logf("smaps_rollup (file pages are the binary's code and data):\n%s", sm)
	}
	if dir := os.Getenv("MOLECULE_AGENT_PROFILE_DIR"); dir != "" {
		// An agent built with GOFLAGS=-tags=pprof writes its heap profile
		// and runtime/metrics there on SIGUSR2 (README "Performance").
		if err := a.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
			b.Fatal(err)
		}
		deadline := time.Now().Add(testenv.Short)
		for time.Now().Before(deadline) {
			if _, err := os.Stat(filepath.Join(dir, "metrics.txt")); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond) // polling for a file another process writes
		}
	}
}
