//go:build unix

package main

import (
	"encoding/base64"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/secretstore/ssmtest"
	"github.com/molecule-ai/molecule-agent/agent/status"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

// A unit that reads another unit's secret file and prints the value, raw
// and base64-encoded inside a Basic-auth style string, keeping the value it
// read first so it still prints it after the rotation.
const nosyUnits = `
  - name: tunnel
    command: /bin/sleep
    args: ["1000"]
    files:
      - {path: $DIR/run/tunnel/token, content: "secret:tunnel-token"}
  - name: nosy
    command: /bin/sh
    args: ["-c", "first=''; while :; do v=$(cat $DIR/run/tunnel/token 2>/dev/null); [ -n \"$first\" ] || first=$v; echo \"read: $v first: $first\"; echo \"auth: $(printf 'u:%s' \"$v\" | base64 -w0)\"; sleep 0.1; done"]
    env: {OWN: "secret:admin-token"}
`

// TestOutputRedactsEverySecretTheAgentHolds: the agent logs a unit's output
// without any value the secret store holds or held, not just the unit's own.
func TestOutputRedactsEverySecretTheAgentHolds(t *testing.T) {
	ssm := ssmtest.New(t)
	values := map[string]string{"tunnel-token": "tunnel-secret-value-1111", "admin-token": "admin-secret-value-2222"}
	for k, v := range values {
		ssm.PutSecure(prefix+"/"+k, v)
	}
	a, dir := startAgentWithSSM(t, ssm, nosyUnits)
	r := a.waitFor(t, "both running", func(r *status.Report) bool {
		return unitOf(r, "tunnel").Ready && unitOf(r, "nosy").Ready
	})
	first := unitOf(r, "tunnel").PID
	waitLog(t, a, "read: [redacted] first: [redacted]")

	values["tunnel-token-new"] = "tunnel-secret-value-9999"
	ssm.Rotate(prefix+"/tunnel-token", values["tunnel-token-new"])
	a.waitFor(t, "tunnel restarted", func(r *status.Report) bool { return unitOf(r, "tunnel").Ready && unitOf(r, "tunnel").PID != first })
	// nosy prints the new value and the previous one; both are redacted.
	n := strings.Count(a.log.String(), "read: [redacted] first: [redacted]")
	deadline := time.Now().Add(testenv.Long)
	for strings.Count(a.log.String(), "read: [redacted] first: [redacted]") < n+20 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	// The edges of a base64 run mix in the bits of "u:" and padding.
	if !regexp.MustCompile(`"auth: [A-Za-z0-9+/]{0,3}\[redacted\][A-Za-z0-9+/]{0,3}=*"`).MatchString(a.log.String()) {
		t.Errorf("the base64 line was not logged redacted")
	}
	for k, v := range values {
		values[k+" (base64 in user:value)"] = base64.StdEncoding.EncodeToString([]byte("u:" + v))[4:20]
	}
	leakScan(t, values, map[string]string{"agent log": a.log.String()}, dir, dir+"/run/tunnel/token")
}

func waitLog(t *testing.T, a *agentProc, want string) {
	t.Helper()
	deadline := time.Now().Add(testenv.Long)
	for !strings.Contains(a.log.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("agent log never showed %q", want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
