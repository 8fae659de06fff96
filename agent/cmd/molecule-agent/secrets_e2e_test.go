//go:build unix

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/secretstore/ssmtest"
	"github.com/molecule-ai/molecule-agent/agent/status"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

const prefix = "/molecule/test/tenants/acme"

// startAgentWithSSM runs the real agent binary against the SSM wire fake.
func startAgentWithSSM(t *testing.T, ssm *ssmtest.Server, units string) (*agentProc, string) {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`state_dir: %[1]s/state
run_dir: %[1]s/run
secrets:
  source: ssm
  prefix: %[2]s
  region: %[3]s
  endpoint: %[4]s
  refresh: 1s
  jitter: 0.1
units:
%[5]s`, dir, prefix, ssmtest.Region, ssm.URL, strings.ReplaceAll(units, "$DIR", dir))
	a := runAgent(t, dir, writeConfig(t, dir, cfg), []string{"PATH=/usr/bin:/bin",
		"AWS_ACCESS_KEY_ID=" + ssmtest.AccessKeyID, "AWS_SECRET_ACCESS_KEY=" + ssmtest.SecretAccessKey,
		"AWS_EC2_METADATA_DISABLED=true"})
	return a, dir
}

func unitOf(r *status.Report, name string) supervisor.UnitStatus {
	for _, u := range r.Units {
		if u.Name == name {
			return u
		}
	}
	return supervisor.UnitStatus{}
}

// waitFor polls the status API until cond holds.
func (a *agentProc) waitFor(t testing.TB, what string, cond func(r *status.Report) bool) *status.Report {
	t.Helper()
	deadline := time.Now().Add(testenv.Long)
	var last *status.Report
	for time.Now().Before(deadline) {
		if r := a.status(t); r != nil {
			last = r
			if cond(r) {
				return r
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s; last status %+v", what, last)
	return nil
}

func environOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(string(b), "\x00", "\n")
}

const secretUnits = `
  - name: tunnel
    command: /bin/sleep
    args: ["1000"]
    env: {TUNNEL_TOKEN: "secret:tunnel-token"}
    files:
      - {path: $DIR/run/tunnel/token, content: "secret:tunnel-token"}
  - name: platform
    command: /bin/sh
    args: ["-c", "echo platform up; exec sleep 1000"]
    env: {ADMIN_TOKEN: "secret:admin-token", DB_PASSWORD: "secret:db/password"}
  - name: plain
    command: /bin/sleep
    args: ["1000"]
  - name: chatty
    command: /bin/sh
    args: ["-c", "echo \"my token is $TOKEN\"; exec sleep 1000"]
    env: {TOKEN: "secret:admin-token"}
`

func TestSecretsReachUnitsAndRotationRestartsOnlyTheirUser(t *testing.T) {
	ssm := ssmtest.New(t)
	values := map[string]string{
		"tunnel-token": "tunnel-secret-value-1111", "admin-token": "admin-secret-value-2222",
		"db/password": "db-secret-value-3333",
	}
	for k, v := range values {
		ssm.PutSecure(prefix+"/"+k, v)
	}
	a, dir := startAgentWithSSM(t, ssm, secretUnits)
	r := a.waitFor(t, "all ready", func(r *status.Report) bool {
		return unitOf(r, "tunnel").Ready && unitOf(r, "platform").Ready && unitOf(r, "plain").Ready &&
			unitOf(r, "chatty").Ready
	})
	tun, plat, plain := unitOf(r, "tunnel"), unitOf(r, "platform"), unitOf(r, "plain")
	if env := environOf(t, tun.PID); !strings.Contains(env, "TUNNEL_TOKEN=tunnel-secret-value-1111\n") {
		t.Errorf("tunnel env lacks TUNNEL_TOKEN")
	}
	if env := environOf(t, tun.PID); strings.Contains(env, "AWS_SECRET_ACCESS_KEY") {
		t.Errorf("the agent's AWS credentials leaked into a unit's environment")
	}
	tokenFile := dir + "/run/tunnel/token"
	checkFile(t, tokenFile, "tunnel-secret-value-1111")

	// Rotate: within one refresh the tunnel unit restarts with the new value,
	// and no other unit restarts.
	values["tunnel-token-new"] = "tunnel-secret-value-9999"
	ssm.Rotate(prefix+"/tunnel-token", "tunnel-secret-value-9999")
	r = a.waitFor(t, "tunnel restarted", func(r *status.Report) bool {
		u := unitOf(r, "tunnel")
		return u.Ready && u.PID != tun.PID
	})
	if env := environOf(t, unitOf(r, "tunnel").PID); !strings.Contains(env, "TUNNEL_TOKEN=tunnel-secret-value-9999\n") {
		t.Errorf("restarted tunnel lacks the new TUNNEL_TOKEN")
	}
	checkFile(t, tokenFile, "tunnel-secret-value-9999")
	// Two more refreshes with nothing changed must restart nothing.
	time.Sleep(2500 * time.Millisecond)
	r = a.status(t)
	if p := unitOf(r, "platform"); p.PID != plat.PID || p.Restarts != 0 {
		t.Errorf("platform restarted (pid %d→%d) though its secrets did not change", plat.PID, p.PID)
	}
	if p := unitOf(r, "plain"); p.PID != plain.PID {
		t.Errorf("plain restarted though it uses no secret")
	}
	if p := unitOf(r, "tunnel"); p.Restarts != 0 {
		t.Errorf("tunnel restarts = %d; a rotation is not a crash", p.Restarts)
	}

	if !strings.Contains(a.log.String(), `my token is [redacted]`) {
		t.Errorf("the chatty unit's output was not logged redacted")
	}
	statusJSON, _ := json.Marshal(r)
	leakScan(t, values, map[string]string{"agent log": a.log.String(), "status API": string(statusJSON)},
		dir, tokenFile)

	// Agent exit removes the secret file.
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	<-a.done
	if _, err := os.Stat(tokenFile); !os.IsNotExist(err) {
		t.Errorf("secret file still there after the agent exited: %v", err)
	}
}

func checkFile(t *testing.T, path, want string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s mode = %v, want 0600", path, fi.Mode().Perm())
	}
	if b, _ := os.ReadFile(path); string(b) != want {
		t.Errorf("%s holds %d bytes, not the expected secret", path, len(b))
	}
}

// leakScan fails if any secret value appears in the texts, in any process's
// command line, or in any file under dir other than the allowed ones.
func leakScan(t *testing.T, values map[string]string, texts map[string]string, dir string, allowed ...string) {
	t.Helper()
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, c := range cmdlines {
		if b, err := os.ReadFile(c); err == nil {
			texts[c] = string(b)
		}
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Type()&fs.ModeSocket != 0 {
			return nil
		}
		for _, a := range allowed {
			if p == a {
				return nil
			}
		}
		if b, err := os.ReadFile(p); err == nil {
			texts[p] = string(b)
		}
		return nil
	})
	if len(texts) < 4 {
		t.Fatalf("leak scan saw only %d sources", len(texts))
	}
	for where, text := range texts {
		for name, v := range values {
			if strings.Contains(text, v) {
				t.Errorf("secret %s leaked into %s", name, where)
			}
		}
	}
}

func TestMissingSecretBlocksTheUnitWithAClearStatus(t *testing.T) {
	ssm := ssmtest.New(t)
	ssm.PutSecure(prefix+"/admin-token", "admin-secret-value-2222")
	a, _ := startAgentWithSSM(t, ssm, `
  - name: tunnel
    command: /bin/sleep
    args: ["1000"]
    env: {TUNNEL_TOKEN: "secret:tunnel-token"}
  - name: plain
    command: /bin/sleep
    args: ["1000"]
`)
	r := a.waitFor(t, "tunnel blocked", func(r *status.Report) bool {
		return unitOf(r, "tunnel").State == supervisor.Blocked && unitOf(r, "plain").Ready
	})
	if d := unitOf(r, "tunnel").Detail; !strings.Contains(d, "tunnel-token") || !strings.Contains(d, prefix) {
		t.Errorf("blocked detail %q should name the parameter and the prefix", d)
	}
	// Creating the parameter lets it start at the next refresh.
	ssm.PutSecure(prefix+"/tunnel-token", "tunnel-secret-value-1111")
	a.waitFor(t, "tunnel ready", func(r *status.Report) bool { return unitOf(r, "tunnel").Ready })
}

func TestAccessDeniedNamesPrefixAndAction(t *testing.T) {
	ssm := ssmtest.New(t)
	ssm.PutSecure(prefix+"/tunnel-token", "tunnel-secret-value-1111")
	ssm.Deny(prefix)
	a, _ := startAgentWithSSM(t, ssm, `
  - name: tunnel
    command: /bin/sleep
    args: ["1000"]
    env: {TUNNEL_TOKEN: "secret:tunnel-token"}
`)
	r := a.waitFor(t, "blocked on access denied", func(r *status.Report) bool {
		return unitOf(r, "tunnel").State == supervisor.Blocked && strings.Contains(unitOf(r, "tunnel").Detail, "ssm:GetParametersByPath")
	})
	d := unitOf(r, "tunnel").Detail
	if !strings.Contains(d, prefix) {
		t.Errorf("detail %q should name the prefix", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Short)
	defer cancel()
	full, err := status.Get(ctx, a.socket)
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := json.Marshal(full.Sections["secrets"]); !strings.Contains(string(s), "ssm:GetParametersByPath") {
		t.Errorf("secrets section %s should carry the access-denied advice", s)
	}
}
