//go:build unix

package workspace_test

import (
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/supervisor"
	"github.com/molecule-ai/molecule-agent/agent/workspace"
	"github.com/molecule-ai/molecule-agent/agent/workspace/workspacetest"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

// TestRegisters: with the token in the secrets source, the runtime started
// by the supervisor registers with it, heartbeats, turns ready on its agent
// card, and the unit's status says registered.
func TestRegisters(t *testing.T) {
	for _, proxy := range []bool{false, true} {
		name := "direct"
		if proxy {
			name = "through the org proxy"
		}
		t.Run(name, func(t *testing.T) {
			ten := workspacetest.NewTenant(orgID)
			defer ten.Close()
			tok := ten.IssueToken(workspaceID)
			start := time.Now()
			r := newRig(t, ten, rigOptions{token: tok, proxy: proxy})
			r.waitRegistered()
			t.Logf("registered and ready %s after start", time.Since(start).Round(time.Millisecond))
			waitFor(t, "2 heartbeats", func() bool { return ten.Heartbeats(workspaceID) >= 2 })

			want := supervisor.WorkspaceFacet{Registration: "registered", PlatformStatus: "online",
				HTTPStatus: 200, RegisterStatus: 200}
			rep := r.unit().Workspace
			if rep == nil {
				t.Fatalf("status: no workspace facet")
			}
			if rep.LastRegister.IsZero() {
				t.Errorf("status workspace facet: no last_register, want the time of this start's register")
			}
			got := *rep
			got.LastRegister = time.Time{}
			if got != want {
				t.Errorf("status workspace facet: got %+v, want %+v", got, want)
			}
			for _, req := range ten.Requests() {
				switch {
				case strings.HasPrefix(req.Path, "/registry/"):
					if got := req.Header.Get("Authorization"); got != "Bearer "+tok {
						t.Errorf("%s: runtime did not send the token from the secrets source", req.Path)
					}
					if proxy && req.Header.Get(workspacetest.OrgHeader) != orgID {
						t.Errorf("%s through the proxy: got org header %q, want %q", req.Path, req.Header.Get(workspacetest.OrgHeader), orgID)
					}
				case strings.HasPrefix(req.Path, "/workspaces/"):
					if req.Header.Get(workspacetest.OrgHeader) != orgID {
						t.Errorf("checker's %s without the org header", req.Path)
					}
				}
			}
			if n := ten.Registrations(workspaceID); n != 1 {
				t.Errorf("registrations: got %d, want 1", n)
			}
			// What the runtime was given.
			pid := r.unit().PID
			env, err := os.ReadFile("/proc/" + itoa(pid) + "/environ")
			if err != nil {
				t.Fatal(err)
			}
			me, err := user.Current()
			if err != nil {
				t.Fatal(err)
			}
			wantPlatform := ten.URL()
			if proxy {
				wantPlatform = r.proxy.URL()
			}
			for _, kv := range []string{"WORKSPACE_ID=" + workspaceID, "PLATFORM_URL=" + wantPlatform,
				"MOLECULE_URL=" + wantPlatform, "HOSTNAME=" + hostIP, "ADAPTER_MODULE=adapter",
				"WORKSPACE_CONFIG_PATH=" + r.dir, "CONFIGS_DIR=" + r.dir, "OPENAI_API_KEY=sk-test-not-a-token",
				"PYTHONUNBUFFERED=1", "HOME=" + me.HomeDir, "USER=" + me.Username, "LOGNAME=" + me.Username} {
				if !strings.Contains("\x00"+string(env)+"\x00", "\x00"+kv+"\x00") {
					t.Errorf("runtime env lacks %s", kv)
				}
			}
			fi, err := os.Stat(filepath.Join(r.dir, workspace.TokenFile))
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("token file: got %v %v, want mode 0600", fi, err)
			}
			b, _ := os.ReadFile(r.logPath)
			if !strings.Contains(string(b), "Registered with platform: 200") {
				t.Errorf("runtime log %s lacks the runtime's output", r.logPath)
			}
			if !strings.Contains(string(b), "env OPENAI_API_KEY=[redacted]") || strings.Contains(string(b), "sk-test-not-a-token") {
				t.Errorf("runtime log: a workspace secret the runtime printed is not redacted")
			}
			r.leakScan(pid, tok)
		})
	}
}

// TestRegistersAsRuntimeUser: run as its own user, the runtime can read the
// 0600 token the agent gave it, and the files are that user's.
func TestRegistersAsRuntimeUser(t *testing.T) {
	testenv.RequireRoot(t)
	usr, err := user.Lookup("nobody")
	if err != nil {
		testenv.Missing(t, "user nobody")
	}
	ten := workspacetest.NewTenant(orgID)
	defer ten.Close()
	tok := ten.IssueToken(workspaceID)
	r := newRig(t, ten, rigOptions{token: tok, user: "nobody"})
	r.waitRegistered()
	st, err := os.ReadFile("/proc/" + itoa(r.unit().PID) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(st), "\nUid:\t"+usr.Uid+"\t") {
		t.Errorf("runtime does not run as nobody (uid %s)", usr.Uid)
	}
	for _, name := range []string{".", workspace.ConfigFile, workspace.TokenFile} {
		fi, err := os.Stat(filepath.Join(r.dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if uid := fi.Sys().(*syscall.Stat_t).Uid; itoa(int(uid)) != usr.Uid {
			t.Errorf("%s: owner uid %d, want %s", name, uid, usr.Uid)
		}
	}
	r.leakScan(r.unit().PID, tok)
}

// TestTokenRotation: a new token in the source, and the restart the daemon
// makes when a unit's secret changes, give the runtime the new token.
func TestTokenRotation(t *testing.T) {
	ten := workspacetest.NewTenant(orgID)
	defer ten.Close()
	oldTok := ten.IssueToken(workspaceID)
	r := newRig(t, ten, rigOptions{token: oldTok})
	r.waitRegistered()
	ten.RevokeTokens(workspaceID)
	newTok := ten.IssueToken(workspaceID)
	writeSecrets(t, r.secPath, newTok)
	changed, err := r.store.Refresh(t.Context())
	if err != nil || !slices.Contains(changed, tokenName) {
		t.Fatalf("refresh: got %v, %v, want %s changed", changed, err, tokenName)
	}
	before := len(ten.Requests())
	if err := r.sup.Restart(t.Context(), "runtime", "secret changed"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "register with the new token", func() bool {
		for _, req := range ten.Requests()[before:] {
			if req.Path == "/registry/register" && req.Status == 200 && req.Header.Get("Authorization") == "Bearer "+newTok {
				return true
			}
		}
		return false
	})
	r.waitRegistered()
	if b, _ := os.ReadFile(filepath.Join(r.dir, workspace.TokenFile)); string(b) != newTok {
		t.Errorf(".auth_token does not hold the rotated token")
	}
	r.leakScan(r.unit().PID, oldTok, newTok)
}

// TestStaleTokenRecovers: the runtime starts with a token the tenant
// rejects while the secrets source already holds the new one: the agent
// refreshes, restarts the runtime once, and it registers.
func TestStaleTokenRecovers(t *testing.T) {
	ten := workspacetest.NewTenant(orgID)
	defer ten.Close()
	newTok := ten.IssueToken(workspaceID)
	oldTok := "stale-token-0123456789-abcdefghijklmnopqrst"
	r := newRig(t, ten, rigOptions{token: oldTok, laterToken: newTok})
	waitFor(t, "recovery", func() bool {
		st := r.checker.Status()
		return st.Registration == workspace.Registered && st.TokenRecovery == workspace.RecoveryRecovered
	})
	r.settle(10)
	if n := ten.Registrations(workspaceID); n != 2 {
		t.Errorf("register attempts: got %d, want 2 (one rejected, one after the single restart)", n)
	}
	b, _ := os.ReadFile(filepath.Join(r.dir, workspace.TokenFile))
	if string(b) != newTok {
		t.Errorf(".auth_token does not hold the refreshed token")
	}
	r.leakScan(r.unit().PID, oldTok, newTok)
}

// TestStaleTokenRecoversOtherPaths: the same recovery when the agent
// cannot see the runtime's output (RegisterTimeout fallback), and when the
// secrets source fails at first (refresh retried at the next check).
func TestStaleTokenRecoversOtherPaths(t *testing.T) {
	oldTok := "stale-token-0123456789-abcdefghijklmnopqrst"
	tests := []struct {
		name string
		o    func(newTok string) rigOptions
		fix  func(r *rig, newTok string)
	}{
		{"output not observed", func(newTok string) rigOptions {
			return rigOptions{token: oldTok, laterToken: newTok, blind: true, registerTimeout: 300 * time.Millisecond}
		}, nil},
		{"secrets source failing first", func(string) rigOptions {
			return rigOptions{token: oldTok, laterRaw: "{not: [valid"}
		}, func(r *rig, newTok string) {
			waitFor(r.t, "refresh failure reported", func() bool {
				return strings.Contains(r.checker.Status().Detail, "fetching it again failed")
			})
			writeSecrets(r.t, r.secPath, newTok)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ten := workspacetest.NewTenant(orgID)
			defer ten.Close()
			newTok := ten.IssueToken(workspaceID)
			r := newRig(t, ten, tc.o(newTok))
			if tc.fix != nil {
				tc.fix(r, newTok)
			}
			waitFor(t, "recovery", func() bool {
				st := r.checker.Status()
				return st.Registration == workspace.Registered && st.TokenRecovery == workspace.RecoveryRecovered
			})
			r.settle(10)
			if n := ten.Registrations(workspaceID); n != 2 {
				t.Errorf("register attempts: got %d, want 2", n)
			}
			r.leakScan(r.unit().PID, oldTok, newTok)
		})
	}
}

// TestStaleTokenDoesNotLoop: when the refreshed token is rejected too, or
// the source holds the same stale token, the agent reports it and stops
// restarting.
func TestStaleTokenDoesNotLoop(t *testing.T) {
	tests := []struct {
		name      string
		later     string // token in the source after the first load
		wantRegs  int
		wantInLog string
	}{
		{"source holds the same token", "", 1, "unchanged in the secrets source"},
		{"refreshed token rejected too", "another-wrong-token-0123456789-abcdefghijkl", 2, "rejected again after a refresh and restart"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ten := workspacetest.NewTenant(orgID)
			defer ten.Close()
			live := ten.IssueToken(workspaceID)
			stale := "stale-token-0123456789-abcdefghijklmnopqrst"
			r := newRig(t, ten, rigOptions{token: stale, laterToken: tc.later})
			waitFor(t, "recovery failure", func() bool {
				return r.checker.Status().TokenRecovery == workspace.RecoveryFailed && ten.Registrations(workspaceID) >= tc.wantRegs
			})
			r.settle(20)
			if n := ten.Registrations(workspaceID); n != tc.wantRegs {
				t.Errorf("register attempts: got %d, want %d", n, tc.wantRegs)
			}
			rep := r.unit().Workspace
			if rep == nil || rep.Registration != workspace.TokenRejected || rep.TokenRecovery != workspace.RecoveryFailed ||
				rep.RegisterStatus != 401 || !strings.Contains(rep.Detail, tokenName) {
				t.Errorf("status info: got %+v, want token_rejected, token_recovery failed, register_status 401, detail naming the parameter", rep)
			}
			if !strings.Contains(r.logs.String(), tc.wantInLog) {
				t.Errorf("agent log lacks %q", tc.wantInLog)
			}
			if st := r.unit(); st.State != supervisor.Ready || st.Restarts != 0 {
				t.Errorf("unit: got %s with %d restarts, want the runtime left running (ready, 0 crash restarts)", st.State, st.Restarts)
			}
			r.leakScan(r.unit().PID, stale, tc.later, live)
		})
	}
}

// TestPlatformMintedToken is token flow (b): no token in the secret
// source. The runtime starts once the tenant shows the workspace, its first
// register mints the token and the runtime writes it; the agent never
// deletes or overwrites it, across a kill -9 of the runtime and an agent
// restart, and the platform mints exactly one token.
func TestPlatformMintedToken(t *testing.T) {
	ten := workspacetest.NewTenant(orgID)
	defer ten.Close()
	ten.AddWorkspace(workspaceID)
	r := newRig(t, ten, rigOptions{})
	r.waitRegistered()
	toks := ten.Tokens(workspaceID)
	if len(toks) != 1 || ten.Minted(workspaceID) != 1 {
		t.Fatalf("live tokens %d, minted %d: want the one register minted", len(toks), ten.Minted(workspaceID))
	}
	tok := toks[0]
	checkToken := func(when string) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(r.dir, workspace.TokenFile))
		if err != nil || string(b) != tok {
			t.Errorf("%s: .auth_token does not hold the platform-minted token (%v)", when, err)
		}
	}
	checkToken("after the first register")
	b, _ := os.ReadFile(r.logPath)
	if !strings.Contains(string(b), "Saved workspace auth token (prefix=[redacted]") {
		t.Errorf("runtime log lacks the redacted token-saved line")
	}
	r.leakScan(r.unit().PID, tok)

	// kill -9 of the runtime: restarted, registers with the saved token.
	pid := r.unit().PID
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new runtime registered", func() bool {
		u := r.unit()
		return u.PID != 0 && u.PID != pid && u.Ready && r.checker.Status().Registration == workspace.Registered &&
			r.checker.Status().RegisterStatus == 200
	})
	checkToken("after kill -9 of the runtime")

	// The agent restarts (its runtime stops with it) on the same host.
	r.close()
	checkToken("after the agent stopped")
	r2 := newRig(t, ten, rigOptions{base: r.base})
	r2.waitRegistered()
	checkToken("after the agent restarted")
	if n := ten.Minted(workspaceID); n != 1 {
		t.Errorf("tokens minted: got %d, want 1", n)
	}
	for _, req := range ten.Requests() {
		if req.Path == "/registry/register" && req.Status != 200 {
			t.Errorf("a register was refused (%d)", req.Status)
		}
	}
	if n := r2.execs(); n != 3 {
		t.Errorf("runtime starts: got %d, want 3 (first, after kill -9, after the agent restart)", n)
	}
	r2.leakScan(r2.unit().PID, tok)
}

// TestPlatformTokenNotOverwritten: flow (a), then the platform issues the
// runtime another token (its tokens were revoked, so the next register
// minted one): the agent keeps that token over the older one still in the
// secret source.
func TestPlatformTokenNotOverwritten(t *testing.T) {
	ten := workspacetest.NewTenant(orgID)
	defer ten.Close()
	src := ten.IssueToken(workspaceID)
	r := newRig(t, ten, rigOptions{token: src})
	r.waitRegistered()
	ten.RevokeTokens(workspaceID)
	if err := r.sup.Restart(t.Context(), "runtime", "test"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the platform's new token saved", func() bool {
		b, _ := os.ReadFile(filepath.Join(r.dir, workspace.TokenFile))
		return len(b) > 0 && string(b) != src
	})
	b, _ := os.ReadFile(filepath.Join(r.dir, workspace.TokenFile))
	issued := string(b)
	if err := r.sup.Restart(t.Context(), "runtime", "test"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "registered after the restart", func() bool {
		return r.checker.Status().Registration == workspace.Registered && r.checker.Status().RegisterStatus == 200 && r.execs() == 3
	})
	if b, _ := os.ReadFile(filepath.Join(r.dir, workspace.TokenFile)); string(b) != issued {
		t.Errorf("the agent overwrote the platform-issued token with the secret source's older one")
	}
	r.leakScan(r.unit().PID, src, issued)
}

// TestRevokedTokenReported: the tenant revokes the runtime's token while it
// runs (its heartbeats still pass: with no live token the tenant lets
// them through, and 401s are silent anyway). The agent reports
// token_rejected at its next check, not after the 180 s liveness TTL, and
// does not restart in a loop.
func TestRevokedTokenReported(t *testing.T) {
	ten := workspacetest.NewTenant(orgID)
	defer ten.Close()
	tok := ten.IssueToken(workspaceID)
	r := newRig(t, ten, rigOptions{token: tok})
	r.waitRegistered()
	ten.RevokeTokens(workspaceID)
	waitFor(t, "token_rejected", func() bool { return registration(r.unit()) == workspace.TokenRejected })
	r.settle(10)
	if st := r.checker.Status(); st.Registration != workspace.TokenRejected || st.TokenRecovery != workspace.RecoveryFailed {
		t.Errorf("status: got %+v, want token_rejected with recovery failed (the source holds the same token)", st)
	}
	if n := r.execs(); n != 1 {
		t.Errorf("runtime starts: got %d, want 1 (no restart without a new token)", n)
	}
	if ten.Status(workspaceID) != "online" {
		t.Errorf("the tenant should still show online (liveness TTL); got %s", ten.Status(workspaceID))
	}
}

// TestFirstTokenlessStartWaitsForTenant: with no token anywhere, the
// runtime does not start before the tenant showed the workspace (a
// tokenless register of a removed workspace would mint it a token).
func TestFirstTokenlessStartWaitsForTenant(t *testing.T) {
	ten := workspacetest.NewTenant("some-other-org") // 404s every check, like a tenant not showing it
	defer ten.Close()
	r := newRig(t, ten, rigOptions{})
	waitFor(t, "blocked", func() bool { return r.unit().State == supervisor.Blocked })
	r.settle(5)
	if d := r.unit().Detail; !strings.Contains(d, "waiting for the tenant to show the workspace") {
		t.Errorf("detail: got %q", d)
	}
	if r.execs() != 0 || ten.Registrations(workspaceID) != 0 {
		t.Errorf("runtime ran %d times, %d registers: want none", r.execs(), ten.Registrations(workspaceID))
	}
}

// TestMissingProviderKey: a key named in workspace.secrets without a value
// blocks the runtime with a status naming it.
func TestMissingProviderKey(t *testing.T) {
	ten := workspacetest.NewTenant(orgID)
	defer ten.Close()
	r := newRig(t, ten, rigOptions{token: ten.IssueToken(workspaceID), noProviderKey: true})
	waitFor(t, "blocked", func() bool { return r.unit().State == supervisor.Blocked })
	if d := r.unit().Detail; !strings.Contains(d, "OPENAI_API_KEY") {
		t.Errorf("detail: got %q, want it to name OPENAI_API_KEY", d)
	}
	if r.execs() != 0 {
		t.Errorf("runtime ran without its provider key")
	}
}

// TestRemovedStaysRemovedAcrossAgentRestart: once the workspace was seen
// removed, an agent restart never starts the runtime, not even for a
// moment (exec counter), and no token is minted for it.
func TestRemovedStaysRemovedAcrossAgentRestart(t *testing.T) {
	ten := workspacetest.NewTenant(orgID)
	defer ten.Close()
	r := newRig(t, ten, rigOptions{token: ten.IssueToken(workspaceID)})
	r.waitRegistered()
	ten.SetStatus(workspaceID, "removed")
	waitFor(t, "runtime stopped", func() bool { return r.unit().State == supervisor.Stopped })
	if !r.state.Removed() {
		t.Fatalf("removal not persisted")
	}
	r.close()
	if r.execs() != 1 {
		t.Fatalf("runtime starts before the agent restart: got %d, want 1", r.execs())
	}
	regs := ten.Registrations(workspaceID)
	r2 := newRig(t, ten, rigOptions{token: "", base: r.base})
	// Stopped for good: from here nothing starts it again.
	waitFor(t, "removed and stopped", func() bool {
		return registration(r2.unit()) == workspace.Removed && r2.unit().State == supervisor.Stopped
	})
	if strings.Contains(r2.logs.String(), "unit started") {
		t.Errorf("the agent started the removed workspace's runtime after its restart")
	}
	if n := r2.execs(); n != 1 {
		t.Errorf("the removed workspace's runtime was started again after the agent restart (%d starts)", n)
	}
	if ten.Registrations(workspaceID) != regs || ten.Minted(workspaceID) != 0 {
		t.Errorf("registers %d→%d, minted %d: want no register and no token after removal", regs, ten.Registrations(workspaceID), ten.Minted(workspaceID))
	}
	if u := r2.unit(); u.PID != 0 {
		t.Errorf("unit: got %s pid %d, want not running", u.State, u.PID)
	}
}

// TestRemovedWorkspace: a workspace removed (or deleted, 404) on the tenant
// stops the runtime for good.
func TestRemovedWorkspace(t *testing.T) {
	for _, how := range []string{"status removed", "404"} {
		t.Run(how, func(t *testing.T) {
			ten := workspacetest.NewTenant(orgID)
			defer ten.Close()
			tok := ten.IssueToken(workspaceID)
			r := newRig(t, ten, rigOptions{token: tok})
			r.waitRegistered()
			pid := r.unit().PID
			r.leakScan(pid, tok)
			if how == "404" {
				ten.Delete(workspaceID)
			} else {
				ten.SetStatus(workspaceID, "removed")
			}
			waitFor(t, "runtime stopped", func() bool {
				return r.unit().State == supervisor.Stopped && r.checker.Status().Registration == workspace.Removed
			})
			if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
				t.Errorf("runtime pid %d still exists (kill 0: %v)", pid, err)
			}
			if err := r.sup.Restart(t.Context(), "runtime", "test"); err == nil {
				t.Errorf("the runtime unit is still supervised after removal; want it stopped for good")
			}
			if st := r.unit(); st.State != supervisor.Stopped || st.PID != 0 {
				t.Errorf("unit: got %s pid %d, want stopped", st.State, st.PID)
			}
			if rep := r.unit().Workspace; rep == nil || rep.Registration != workspace.Removed {
				t.Errorf("status workspace facet: got %+v, want registration removed", rep)
			}
			r.leakScan(0, tok)
		})
	}
}

// TestRegistrationFollowsStatus: degraded is still registered; paused is
// not, and is reported with the status.
func TestRegistrationFollowsStatus(t *testing.T) {
	ten := workspacetest.NewTenant(orgID)
	defer ten.Close()
	tok := ten.IssueToken(workspaceID)
	r := newRig(t, ten, rigOptions{token: tok})
	r.waitRegistered()
	tests := []struct {
		status, want string
	}{
		{"degraded", workspace.Registered},
		{"paused", workspace.NotRegistered},
		{"online", workspace.Registered},
	}
	for _, tc := range tests {
		t.Run(tc.status, func(t *testing.T) {
			ten.SetStatus(workspaceID, tc.status)
			waitFor(t, "status "+tc.status, func() bool { return r.checker.Status().WorkspaceStatus == tc.status })
			r.settle(1)
			if got := r.unit().Workspace; got == nil || got.Registration != tc.want {
				t.Errorf("workspace facet: got %+v, want registration %q", got, tc.want)
			}
		})
	}
}

// TestUnknownOrgDoesNotStop: a 404 before the workspace was ever found (a
// wrong org id looks the same) is reported, and never stops the runtime.
func TestUnknownOrgDoesNotStop(t *testing.T) {
	ten := workspacetest.NewTenant("some-other-org")
	defer ten.Close()
	tok := ten.IssueToken(workspaceID)
	r := newRig(t, ten, rigOptions{token: tok})
	waitFor(t, "ready", func() bool { return r.unit().Ready })
	r.settle(10)
	st := r.checker.Status()
	if st.Registration != workspace.NotRegistered || st.HTTPStatus != 404 || !strings.Contains(st.Detail, "org id") {
		t.Errorf("status: got %+v, want not_registered, 404, a detail about the org id", st)
	}
	if u := r.unit(); u.State != supervisor.Ready {
		t.Errorf("unit: got %s, want ready (not stopped)", u.State)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestMissingRuntimeUser: a runtime user that does not exist blocks the
// runtime with a status naming the user, instead of a failed exec.
func TestMissingRuntimeUser(t *testing.T) {
	ten := workspacetest.NewTenant(orgID)
	defer ten.Close()
	r := newRig(t, ten, rigOptions{token: ten.IssueToken(workspaceID), user: "no-such-runtime-user"})
	waitFor(t, "blocked", func() bool { return r.unit().State == supervisor.Blocked })
	if d := r.unit().Detail; !strings.Contains(d, `"no-such-runtime-user" does not exist`) {
		t.Errorf("detail: got %q, want it to name the missing user", d)
	}
	if n := ten.Registrations(workspaceID); n != 0 {
		t.Errorf("register attempts: got %d, want 0", n)
	}
}

// registration is the unit's workspace facet's registration ("" for none).
func registration(u supervisor.UnitStatus) string {
	if u.Workspace == nil {
		return ""
	}
	return u.Workspace.Registration
}
