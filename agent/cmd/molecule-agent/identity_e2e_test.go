//go:build unix

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/identity/imdstest"
	"github.com/molecule-ai/molecule-agent/agent/status"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
)

func TestSpotNoticeStopsUnitsInReverseOrder(t *testing.T) {
	imds := imdstest.New(t, imdstest.Instance{})
	dir := t.TempDir()
	notes := filepath.Join(dir, "notes")
	unit := func(name, after string) string {
		script := fmt.Sprintf("trap 'echo stopped %s >> %s; exit 0' TERM; echo started %s >> %s; while :; do sleep 0.05; done", name, notes, name, notes)
		u := fmt.Sprintf("  - name: %s\n    command: /bin/sh\n    args: [\"-c\", %q]\n    stop: {grace: 5s}\n", name, script)
		if after != "" {
			u += "    after: [" + after + "]\n"
		}
		return u
	}
	cfg := fmt.Sprintf("state_dir: %[1]s/state\nrun_dir: %[1]s/run\nidentity:\n  imds_endpoint: %[2]s\n  watch_interruptions: true\nunits:\n%[3]s%[4]s%[5]s",
		dir, imds.URL, unit("db", ""), unit("app", "db"), unit("proxy", "app"))
	a := runAgent(t, dir, writeConfig(t, dir, cfg), nil)

	a.waitUnits(t, "ready", func(_ string, ready bool) bool { return ready })
	imds.SetSpotAction("terminate", time.Now().Add(2*time.Minute))
	r := a.waitFor(t, "all stopped", func(r *status.Report) bool {
		for _, u := range r.Units {
			if u.State != supervisor.Stopped {
				return false
			}
		}
		return r.Agent.Phase == "interrupted"
	})
	if s := fmt.Sprint(r.Sections["interruption"]); !strings.Contains(s, "spot-interruption") {
		t.Errorf("interruption section = %s", s)
	}
	b, _ := os.ReadFile(notes)
	// Without readiness probes a unit is ready once started, so only the
	// stop order is deterministic: each unit stops after its dependents.
	got := string(b)
	got = strings.Join(strings.Fields(got[strings.Index(got, "stopped"):]), " ")
	want := "stopped proxy stopped app stopped db"
	if got != want {
		t.Errorf("order = %q\nwant    %q", got, want)
	}
	// The agent stays up to report the interruption.
	select {
	case <-a.done:
		t.Error("agent exited after the interruption; it should stay up to report it")
	default:
	}
}
