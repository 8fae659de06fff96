//go:build unix

package daemon_test

import (
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/molecule-ai/molecule-agent/agent/daemon"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
	"github.com/molecule-ai/molecule-agent/controlplane/api"
)

// sleeper is a unit that marks its start in %[1]s/started-<name> and runs
// until stopped.
func sleeper(name, extra string) string {
	return "  - name: " + name + "\n    command: /bin/sh\n    args: [-c, 'touch %[1]s/started-" + name +
		"; exec sleep 1000']\n" + extra
}

// Boot runs its phases in order: the secrets are fetched, the host proves
// its identity and registers before any unit starts, and the timeline the
// control plane receives is exactly those phases.
func TestBootRunsPhasesInOrder(t *testing.T) {
	var r *rig
	cp := newControlPlane(t, func() any {
		// Registration: no unit may have started yet.
		m, _ := filepath.Glob(filepath.Join(r.dir, "started-*"))
		return m
	}, func(api.HeartbeatRequest) int { return http.StatusOK })
	r = newRig(t, map[string]string{"one": "v1"}, controlPlaneConfig(t, cp),
		sleeper("a", "    env: {ONE: 'secret:one'}\n")+sleeper("b", "    after: [a]\n"))
	want := []string{daemon.PhaseParams, daemon.PhaseSecrets, daemon.PhaseIdentity, daemon.PhaseRegistration, daemon.PhaseUnits}
	hb := cp.waitBeat(t, "the whole boot", func(hb api.HeartbeatRequest) bool { return len(hb.Boot) == len(want) })

	var steps []string
	for i, s := range hb.Boot {
		steps = append(steps, s.Step)
		if s.Detail != "" {
			t.Errorf("phase %s: %q, want done", s.Step, s.Detail)
		}
		if i > 0 && s.At.Before(hb.Boot[i-1].At) {
			t.Errorf("phase %s ended before %s", s.Step, hb.Boot[i-1].Step)
		}
	}
	if !slices.Equal(steps, want) {
		t.Errorf("boot timeline %v, want %v", steps, want)
	}
	if got := r.d.Timeline(); !slices.EqualFunc(got, hb.Boot, func(a, b api.BootStep) bool {
		return a.Step == b.Step && a.At.Equal(b.At) && a.TookMS == b.TookMS
	}) {
		t.Errorf("heartbeat timeline %+v is not the daemon's %+v", hb.Boot, got)
	}
	cp.mu.Lock()
	started := cp.atRegister
	cp.mu.Unlock()
	if m, _ := started.([]string); len(m) != 0 {
		t.Errorf("units started before the host registered: %v", m)
	}
	r.waitPath(filepath.Join(r.dir, "started-a"))
	r.waitPath(filepath.Join(r.dir, "started-b"))
}

// A 410 from the control plane stops every unit, in reverse order, and the
// agent stays idle with nothing running.
func TestDeprovisionedHostStopsEveryUnit(t *testing.T) {
	cp := newControlPlane(t, nil, func(hb api.HeartbeatRequest) int {
		ready := len(hb.Units) == 3
		for _, u := range hb.Units {
			ready = ready && u.State == string(supervisor.Ready)
		}
		if ready {
			return http.StatusGone
		}
		return http.StatusOK
	})
	r := newRig(t, map[string]string{}, controlPlaneConfig(t, cp),
		sleeper("a", "")+sleeper("b", "    after: [a]\n")+sleeper("c", ""))
	running := r.waitUnits("every unit ready", allReady)
	r.waitUnits("every unit stopped", func(st map[string]supervisor.UnitStatus) bool {
		for _, u := range st {
			if u.State != supervisor.Stopped {
				return false
			}
		}
		return true
	})
	if p := r.d.Report().Agent.Phase; p != "idle" {
		t.Errorf("agent phase %q, want idle", p)
	}
	for name, u := range running {
		if !gone(u.PID) {
			t.Errorf("unit %s: pid %d still runs", name, u.PID)
		}
	}
	for _, u := range r.d.Supervisor().Status() {
		if u.PID != 0 || u.Restarts != 0 {
			t.Errorf("unit %s after 410: pid %d restarts %d, want stopped for good", u.Name, u.PID, u.Restarts)
		}
	}
}

// A rotated secret restarts only the units that use it, by env or by file;
// the others keep their process.
func TestRotatedSecretRestartsOnlyItsUsers(t *testing.T) {
	r := newRig(t, map[string]string{"one": "v1", "two": "w1"}, "",
		sleeper("envuser", "    env: {ONE: 'secret:one'}\n")+
			"  - name: fileuser\n    command: /bin/sh\n    args: [-c, 'cat %[1]s/two.txt > %[1]s/seen; exec sleep 1000']\n"+
			"    files: [{path: '%[1]s/two.txt', content: 'secret:two'}]\n"+
			sleeper("plain", ""))
	first := r.waitUnits("every unit ready", allReady)

	r.writeSecrets(map[string]string{"one": "v2", "two": "w1"})
	second := r.waitUnits("envuser restarted", func(st map[string]supervisor.UnitStatus) bool {
		return st["envuser"].Ready && st["envuser"].PID != first["envuser"].PID
	})
	// Rotations are handled one after the other: once fileuser runs with
	// the second one's value, whatever the first restarted shows.
	r.writeSecrets(map[string]string{"one": "v2", "two": "w2"})
	r.waitFile(filepath.Join(r.dir, "seen"), "w2")
	third := r.waitUnits("fileuser restarted", func(st map[string]supervisor.UnitStatus) bool {
		return st["fileuser"].Ready && st["fileuser"].PID != first["fileuser"].PID
	})
	if third["envuser"].PID != second["envuser"].PID {
		t.Errorf("envuser restarted for a secret it does not use")
	}
	if third["plain"].PID != first["plain"].PID {
		t.Errorf("plain restarted for secrets it does not use")
	}
	if b, err := os.ReadFile(filepath.Join(r.dir, "two.txt")); err != nil || string(b) != "w2" {
		t.Errorf("two.txt = %q, %v; want the rotated value", b, err)
	}
	env, err := os.ReadFile("/proc/" + itoa(third["envuser"].PID) + "/environ")
	if err != nil || !strings.Contains(string(env), "ONE=v2\x00") {
		t.Errorf("envuser env lacks the rotated ONE (%v)", err)
	}
}

// Cancelling Run (what SIGTERM does in the command) sends each unit its
// stop signal, kills one that ignores it after its grace, removes the
// secret files the agent owns and keeps those a unit owns.
func TestStopSignalsThenKillsAfterGrace(t *testing.T) {
	r := newRig(t, map[string]string{"two": "w1"}, "",
		"  - name: polite\n    command: /bin/sh\n    args: [-c, 'trap \"touch %[1]s/termed; exit 0\" TERM; touch %[1]s/trapped; while :; do sleep 0.05; done']\n"+
			"    files: [{path: '%[1]s/agent-owned', content: 'secret:two'}]\n"+
			"  - name: stubborn\n    command: /bin/sh\n    args: [-c, 'trap \"\" TERM; while :; do sleep 0.05; done']\n"+
			"    stop: {grace: 300ms}\n"+
			"    files: [{path: '%[1]s/unit-owned', content: 'secret:two', owner: unit}]\n")
	st := r.waitUnits("every unit ready", allReady)
	r.waitPath(filepath.Join(r.dir, "trapped"))
	r.shutdown()
	if _, err := os.Stat(filepath.Join(r.dir, "termed")); err != nil {
		t.Errorf("polite unit never got its stop signal: %v", err)
	}
	for name, u := range st {
		if !gone(u.PID) {
			t.Errorf("unit %s: pid %d survived the agent's exit", name, u.PID)
		}
	}
	if _, err := os.Stat(filepath.Join(r.dir, "agent-owned")); !os.IsNotExist(err) {
		t.Errorf("agent-owned secret file left behind: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(r.dir, "unit-owned")); err != nil || string(b) != "w1" {
		t.Errorf("unit-owned file = %q, %v; want it kept", b, err)
	}
}

// A file the unit owns is written only when the source holds a value the
// agent has not written there yet; without one the unit starts and keeps
// its own copy, and nothing removes it.
func TestUnitOwnedFileIsWrittenOnlyWithANewValue(t *testing.T) {
	r := newRig(t, map[string]string{}, "",
		"  - name: minter\n    command: /bin/sh\n    args: [-c, '[ -s %[1]s/tok ] || printf minted-by-unit > %[1]s/tok; exec sleep 1000']\n"+
			"    files: [{path: '%[1]s/tok', content: 'secret:minted', owner: unit}]\n")
	tok := filepath.Join(r.dir, "tok")
	first := r.waitUnits("minter ready without the secret", allReady)
	r.waitFile(tok, "minted-by-unit")
	if err := r.d.Supervisor().Restart(t.Context(), "minter", "test"); err != nil {
		t.Fatal(err)
	}
	second := r.waitUnits("minter restarted", func(st map[string]supervisor.UnitStatus) bool {
		return st["minter"].Ready && st["minter"].PID != first["minter"].PID
	})
	r.waitFile(tok, "minted-by-unit")

	r.writeSecrets(map[string]string{"minted": "from-source"})
	r.waitUnits("minter restarted with the source's value", func(st map[string]supervisor.UnitStatus) bool {
		return st["minter"].Ready && st["minter"].PID != second["minter"].PID
	})
	r.waitFile(tok, "from-source")
	r.shutdown()
	if b, err := os.ReadFile(tok); err != nil || string(b) != "from-source" {
		t.Errorf("after the agent's exit %s = %q, %v; want it kept", tok, b, err)
	}
}

// A file the unit owns that the unit replaced (a platform-minted token over
// a pre-minted one) is not overwritten with the source's unchanged value at
// the next start; a new value in the source is written. The record of what
// was written lives under the agent's state dir, not beside the file.
func TestUnitOwnedFileKeepsTheUnitsValueOverAStaleSource(t *testing.T) {
	r := newRig(t, map[string]string{"tok": "pre-minted"}, "",
		"  - name: minter\n    command: /bin/sh\n    args: [-c, '[ \"$(cat %[1]s/tok)\" = pre-minted ] && printf platform-token > %[1]s/tok; exec sleep 1000']\n"+
			"    files: [{path: '%[1]s/tok', content: 'secret:tok', owner: unit}]\n")
	tok := filepath.Join(r.dir, "tok")
	first := r.waitUnits("minter ready", allReady)
	r.waitFile(tok, "platform-token")
	if err := r.d.Supervisor().Restart(t.Context(), "minter", "test"); err != nil {
		t.Fatal(err)
	}
	second := r.waitUnits("minter restarted", func(st map[string]supervisor.UnitStatus) bool {
		return st["minter"].Ready && st["minter"].PID != first["minter"].PID
	})
	if b, err := os.ReadFile(tok); err != nil || string(b) != "platform-token" {
		t.Errorf("after a restart %s = %q, %v; want the unit's platform-token kept", tok, b, err)
	}
	if entries, err := os.ReadDir(filepath.Join(r.dir, "state", "unit-files")); err != nil || len(entries) != 1 {
		t.Errorf("state dir records: %v, %v; want one", entries, err)
	}
	r.writeSecrets(map[string]string{"tok": "rotated"})
	r.waitUnits("minter restarted by the rotation", func(st map[string]supervisor.UnitStatus) bool {
		return st["minter"].Ready && st["minter"].PID != second["minter"].PID
	})
	r.waitFile(tok, "rotated")
}
