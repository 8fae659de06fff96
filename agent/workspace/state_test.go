//go:build unix

package workspace_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/workspace"
)

func TestState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", workspace.StateFileName)
	s, err := workspace.OpenState(path, "ws-1")
	if err != nil || s.Removed() {
		t.Fatalf("fresh state: %v removed=%v", err, s.Removed())
	}
	for i := range workspace.MaxRecoveryRestarts {
		if ok, err := s.TakeRecoveryRestart(); !ok || err != nil {
			t.Fatalf("recovery restart %d: %v %v, want allowed", i+1, ok, err)
		}
	}
	// An agent restart keeps the count: the bound holds across restarts.
	s, err = workspace.OpenState(path, "ws-1")
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.TakeRecoveryRestart(); ok {
		t.Errorf("recovery restart beyond %d allowed after an agent restart", workspace.MaxRecoveryRestarts)
	}
	if err := s.Registered(time.Now()); err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.TakeRecoveryRestart(); !ok {
		t.Errorf("a registration did not allow recovery again")
	}
	if err := s.MarkRemoved(time.Now()); err != nil {
		t.Fatal(err)
	}
	if s, _ = workspace.OpenState(path, "ws-1"); !s.Removed() {
		t.Errorf("removal not persisted")
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state file: %v %v, want mode 0600", fi, err)
	}
	// Another workspace on the same host starts fresh.
	if s, _ = workspace.OpenState(path, "ws-2"); s.Removed() {
		t.Errorf("the removal of ws-1 applies to ws-2")
	}
	// A corrupt file is an error naming it, never a silent fresh start.
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := workspace.OpenState(path, "ws-1"); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("corrupt state: got %v, want an error naming %s", err, path)
	}
}

// TestRecoveryBoundAcrossAgentRestarts: with the recovery restarts of
// earlier agent runs used up, a rejected token with a new one in the source
// is reported, not restarted.
func TestRecoveryBoundAcrossAgentRestarts(t *testing.T) {
	ten := newTenant(t)
	newTok := ten.IssueToken(workspaceID)
	base := t.TempDir()
	s, err := workspace.OpenState(filepath.Join(base, "state", workspace.StateFileName), workspaceID)
	if err != nil {
		t.Fatal(err)
	}
	for range workspace.MaxRecoveryRestarts {
		_, _ = s.TakeRecoveryRestart()
	}
	r := newRig(t, ten, rigOptions{base: base, token: "stale-token-0123456789-abcdefghijklmnopqrst", laterToken: newTok})
	waitFor(t, "recovery refused", func() bool { return r.checker.Status().TokenRecovery == workspace.RecoveryFailed })
	r.settle(5)
	if n := r.execs(); n != 1 {
		t.Errorf("runtime starts: got %d, want 1 (no recovery restart past the bound)", n)
	}
	if d := r.checker.Status().Detail; !strings.Contains(d, "limit") {
		t.Errorf("detail: got %q, want it to say the restart limit was reached", d)
	}
}

// TestSourceRotationWinsOverPlatformToken: the runtime holds a token the
// platform minted (flow b); an operator then puts a new token in the
// secret source. The source wins: the restart the daemon makes for a
// changed secret writes it, and the runtime registers with it.
func TestSourceRotationWinsOverPlatformToken(t *testing.T) {
	ten := newTenant(t)
	ten.AddWorkspace(workspaceID)
	r := newRig(t, ten, rigOptions{})
	r.waitRegistered()
	ten.RevokeTokens(workspaceID)
	rotated := ten.IssueToken(workspaceID)
	writeSecrets(t, r.secPath, rotated)
	changed, err := r.store.Refresh(t.Context())
	if err != nil || len(changed) == 0 {
		t.Fatalf("refresh: %v %v", changed, err)
	}
	if err := r.sup.Restart(t.Context(), "runtime", "secret changed"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "registered with the rotated token", func() bool {
		b, _ := os.ReadFile(filepath.Join(r.dir, workspace.TokenFile))
		st := r.checker.Status()
		return string(b) == rotated && st.Registration == workspace.Registered && st.RegisterStatus == 200 && r.execs() == 2
	})
	if !strings.Contains(r.logs.String(), "replaced the runtime's token file") {
		t.Errorf("the agent log does not say the source's token replaced the runtime's")
	}
	r.settle(5)
	if n := r.execs(); n != 2 {
		t.Errorf("runtime starts: got %d, want 2 (one restart for the rotation)", n)
	}
	r.leakScan(r.unit().PID, rotated)
}
