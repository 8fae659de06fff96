//go:build unix

package supervisor

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/restart"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewJSONHandler(&testenv.Buffer{}, nil))
}

func fastPolicy() restart.Policy {
	return restart.Policy{Mode: restart.Always, InitialDelay: 10 * time.Millisecond,
		MaxDelay: 80 * time.Millisecond, StableAfter: time.Minute, Budget: 100, Window: time.Minute}
}

// helperSpec is a unit running the named helper.
func helperSpec(t *testing.T, name, helperName, arg string, extraEnv ...string) Spec {
	return Spec{Name: name, Kind: "exec", Driver: helperDriver(t, helperName, arg),
		Grace: 2 * time.Second, Restart: fastPolicy(),
		Prepare: func(context.Context) ([]string, error) {
			return helperEnv(helperName, append(extraEnv, "NAME="+name)...), nil
		}}
}

func startSup(t *testing.T, specs ...Spec) *Supervisor {
	t.Helper()
	s, err := New(testLog(t), specs)
	if err != nil {
		t.Fatal(err)
	}
	s.Start(context.Background())
	t.Cleanup(s.Stop)
	return s
}

func unitStatus(s *Supervisor, name string) UnitStatus { return s.units[name].status() }

// waitFor waits until cond holds on the unit's status, woken by state changes.
func waitFor(t *testing.T, s *Supervisor, name, what string, cond func(UnitStatus) bool) UnitStatus {
	t.Helper()
	deadline := time.After(testenv.Long)
	for {
		ch := s.Changed()
		st := unitStatus(s, name)
		if cond(st) {
			return st
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("unit %s: timed out waiting for %s; last status %+v", name, what, st)
		}
	}
}

func TestRestartsUntilBudgetThenFailedForGood(t *testing.T) {
	sp := helperSpec(t, "crasher", "exit", "1")
	sp.Restart.Budget = 4
	s := startSup(t, sp)
	st := waitFor(t, s, "crasher", "failed", func(st UnitStatus) bool { return st.State == Failed })
	if st.Restarts != 4 {
		t.Errorf("restarts = %d, want 4 (the budget)", st.Restarts)
	}
	if !strings.Contains(st.Detail, "giving up") || st.LastExit != "exit code 1" {
		t.Errorf("detail %q, last exit %q; want the budget reason and exit code 1", st.Detail, st.LastExit)
	}
	// Failed is terminal: no state change follows on its own.
	select {
	case <-s.Changed():
		t.Errorf("state changed after failed: %+v", unitStatus(s, "crasher"))
	case <-time.After(300 * time.Millisecond):
	}
}

func TestNoRestartExitCodeIsHonoured(t *testing.T) {
	sp := helperSpec(t, "perm", "exit", "42")
	sp.Restart.NoRestart = []int{42}
	s := startSup(t, sp)
	st := waitFor(t, s, "perm", "failed", func(st UnitStatus) bool { return st.State == Failed })
	if st.Restarts != 0 || !strings.Contains(st.Detail, "exit code 42 means do not restart") {
		t.Errorf("restarts %d detail %q; want 0 and the do-not-restart reason", st.Restarts, st.Detail)
	}
}

func TestBackoffGrowsAndResetsAfterStableRun(t *testing.T) {
	// Quick crashes: the backoff ceiling doubles each time.
	sp := helperSpec(t, "quick", "exit", "1")
	sp.Restart.InitialDelay, sp.Restart.MaxDelay = 20*time.Millisecond, 10*time.Second
	s := startSup(t, sp)
	waitFor(t, s, "quick", "4 restarts", func(st UnitStatus) bool { return st.Restarts >= 4 })
	if a := s.units["quick"].tracker.Attempt(); a < 4 {
		t.Errorf("attempt = %d after 4 quick crashes, want ≥ 4 (backoff growing)", a)
	}

	// Runs longer than stable_after: the backoff never grows.
	sp2 := helperSpec(t, "stable", "sleep-exit", "150ms")
	sp2.Restart.StableAfter = 100 * time.Millisecond
	s2 := startSup(t, sp2)
	waitFor(t, s2, "stable", "3 restarts", func(st UnitStatus) bool { return st.Restarts >= 3 })
	if a := s2.units["stable"].tracker.Attempt(); a != 1 {
		t.Errorf("attempt = %d after stable runs, want 1 (reset each time)", a)
	}
}

// groupMembers lists live processes in process group pgid.
func groupMembers(pgid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		g, err := syscall.Getpgid(pid)
		if err != nil || g != pgid {
			continue
		}
		b, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if f := strings.Fields(string(b)); len(f) > 2 && f[2] == "Z" {
			out = append(out, -pid) // zombie
			continue
		}
		out = append(out, pid)
	}
	return out
}

func TestStopLeavesNoProcessOfTheGroup(t *testing.T) {
	sp := helperSpec(t, "tree", "grandchildren", "")
	s, err := New(testLog(t), []Spec{sp})
	if err != nil {
		t.Fatal(err)
	}
	s.Start(context.Background())
	st := waitFor(t, s, "tree", "ready", func(st UnitStatus) bool { return st.Ready })
	pgid := st.PID
	deadline := time.Now().Add(testenv.Short)
	for len(groupMembers(pgid)) < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(groupMembers(pgid)); n < 3 {
		t.Fatalf("group %d has %d members, want the leader and 2 grandchildren", pgid, n)
	}
	s.Stop()
	if m := groupMembers(pgid); len(m) != 0 {
		t.Errorf("after stop, group %d still has %v (negative = zombie)", pgid, m)
	}
	if st := unitStatus(s, "tree"); st.State != Stopped {
		t.Errorf("state = %s, want stopped", st.State)
	}
}

func TestChildIgnoringSIGTERMIsKilledAfterGrace(t *testing.T) {
	sp := helperSpec(t, "stubborn", "ignore-term", "")
	sp.Grace = 300 * time.Millisecond
	s, err := New(testLog(t), []Spec{sp})
	if err != nil {
		t.Fatal(err)
	}
	s.Start(context.Background())
	waitFor(t, s, "stubborn", "ready", func(st UnitStatus) bool { return st.Ready })
	// Let the child install its handler: it prints once it has.
	pid := unitStatus(s, "stubborn").PID
	deadline := time.Now().Add(testenv.Short)
	for !ignoresTERM(pid) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !ignoresTERM(pid) {
		t.Fatal("helper never ignored SIGTERM")
	}
	s.Stop()
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("pid %d still alive after stop", pid)
	}
}

// ignoresTERM reads the SigIgn mask of pid.
func ignoresTERM(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "SigIgn:\t"); ok {
			mask, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return mask&(1<<(uint(syscall.SIGTERM)-1)) != 0
		}
	}
	return false
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestDependenciesStartAfterReadyStopInReverse(t *testing.T) {
	notes := filepath.Join(t.TempDir(), "notes")
	addrA, addrB := freeAddr(t), freeAddr(t)
	a := helperSpec(t, "a", "listen-after", addrA, "NOTE_FILE="+notes)
	a.Prober = &TCPProbe{Addr: addrA}
	a.ProbeInterval = 20 * time.Millisecond
	b := helperSpec(t, "b", "listen-after", addrB, "NOTE_FILE="+notes)
	b.After = []string{"a"}
	b.Prober = &TCPProbe{Addr: addrB}
	b.ProbeInterval = 20 * time.Millisecond
	s, err := New(testLog(t), []Spec{b, a}) // config order must not matter
	if err != nil {
		t.Fatal(err)
	}
	s.Start(context.Background())
	waitFor(t, s, "b", "ready", func(st UnitStatus) bool { return st.Ready })
	s.Stop()

	raw, err := os.ReadFile(notes)
	if err != nil {
		t.Fatal(err)
	}
	var events []string
	for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		events = append(events, strings.Join(strings.Fields(l)[:2], " "))
	}
	want := []string{"start a", "listening a", "start b", "listening b", "stopped b", "stopped a"}
	if strings.Join(events, ",") != strings.Join(want, ",") {
		t.Errorf("events = %v\nwant %v", events, want)
	}
}

func TestReplaceSwapsWithoutCountingACrash(t *testing.T) {
	sp := helperSpec(t, "r", "sleep-exit", "1h")
	s := startSup(t, sp)
	before := waitFor(t, s, "r", "ready", func(st UnitStatus) bool { return st.Ready })
	err := s.Replace(context.Background(), "r", func(ctx context.Context, old Instance) (Instance, error) {
		// While the old instance serves (an image pull) the unit stays
		// ready; once it is stopped the unit is not ready until the new one
		// proves it, so status never claims a port that answers nothing.
		if st := unitStatus(s, "r"); !st.Ready {
			t.Errorf("status before the old instance stopped = %+v, want ready", st)
		}
		if err := old.Stop(ctx, time.Second); err != nil {
			return nil, err
		}
		waitFor(t, s, "r", "not ready once the old instance stopped", func(st UnitStatus) bool { return !st.Ready })
		return sp.Driver.Start(ctx, helperEnv("sleep-exit"))
	})
	if err != nil {
		t.Fatal(err)
	}
	after := waitFor(t, s, "r", "ready again", func(st UnitStatus) bool { return st.Ready })
	if after.PID == before.PID || after.Restarts != 0 {
		t.Errorf("pid %d→%d restarts %d; want a new pid and no restart counted", before.PID, after.PID, after.Restarts)
	}
}

func TestBlockedUntilPoked(t *testing.T) {
	var mu sync.Mutex
	have := false
	sp := helperSpec(t, "needs", "sleep-exit", "1h")
	sp.Prepare = func(context.Context) ([]string, error) {
		mu.Lock()
		defer mu.Unlock()
		if !have {
			return nil, &BlockedError{Reason: "secret tunnel-token missing"}
		}
		return helperEnv("sleep-exit"), nil
	}
	s := startSup(t, sp)
	st := waitFor(t, s, "needs", "blocked", func(st UnitStatus) bool { return st.State == Blocked })
	if st.Detail != "secret tunnel-token missing" || st.PID != 0 {
		t.Errorf("blocked status %+v", st)
	}
	mu.Lock()
	have = true
	mu.Unlock()
	s.Poke()
	waitFor(t, s, "needs", "ready", func(st UnitStatus) bool { return st.Ready })
}

func TestRestartOnRequestDoesNotTouchBudget(t *testing.T) {
	sp := helperSpec(t, "rot", "sleep-exit", "1h")
	s := startSup(t, sp)
	first := waitFor(t, s, "rot", "ready", func(st UnitStatus) bool { return st.Ready })
	if err := s.Restart(context.Background(), "rot", "secret changed"); err != nil {
		t.Fatal(err)
	}
	second := waitFor(t, s, "rot", "ready", func(st UnitStatus) bool { return st.Ready && st.PID != first.PID })
	if second.Restarts != 0 || s.units["rot"].tracker.Attempt() != 0 {
		t.Errorf("restarts %d attempt %d, want 0/0", second.Restarts, s.units["rot"].tracker.Attempt())
	}
}

func TestNotReadyForTooLongRestarts(t *testing.T) {
	sp := helperSpec(t, "wedged", "sleep-exit", "1h")
	sp.Prober = &TCPProbe{Addr: freeAddr(t)} // nothing listens
	sp.ProbeInterval = 20 * time.Millisecond
	sp.NotReadyRestart = 200 * time.Millisecond
	s := startSup(t, sp)
	st := waitFor(t, s, "wedged", "a restart", func(st UnitStatus) bool { return st.Restarts >= 1 })
	if !strings.Contains(st.LastExit, "not ready for 200ms") {
		t.Errorf("last exit %q, want the not-ready reason", st.LastExit)
	}
}

func TestNewRejectsBadSpecs(t *testing.T) {
	d := helperDriver(t, "exit", "0")
	tests := []struct {
		name  string
		specs []Spec
		want  string
	}{
		{"unknown dep", []Spec{{Name: "a", Driver: d, After: []string{"x"}}}, "unknown unit"},
		{"cycle", []Spec{{Name: "a", Driver: d, After: []string{"b"}}, {Name: "b", Driver: d, After: []string{"a"}}}, "cycle"},
		{"dup", []Spec{{Name: "a", Driver: d}, {Name: "a", Driver: d}}, "twice"},
		{"no driver", []Spec{{Name: "a"}}, "no driver"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(testLog(t), tt.specs)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}
