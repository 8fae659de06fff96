//go:build unix

package workspacetest_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/molecule-ai/molecule-agent/agent/workspace/workspacetest"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func do(t *testing.T, method, url string, hdr map[string]string, body any) (int, map[string]string) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]string{}
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func TestTenantContract(t *testing.T) {
	ten := workspacetest.NewTenant("org-1")
	defer ten.Close()
	const id = "ws-1"
	reg := map[string]any{"id": id, "url": "http://10.0.0.5:8000", "agent_card": map[string]string{"name": "x"}}
	hb := map[string]any{"workspace_id": id}

	// Bootstrap: no live token, register allowed and mints one.
	code, body := do(t, "POST", ten.URL()+"/registry/register", nil, reg)
	if code != 200 || body["status"] != "registered" || len(body["auth_token"]) != 43 {
		t.Fatalf("bootstrap register: got %d %v, want 200 registered with a 43-char auth_token", code, body)
	}
	tok := body["auth_token"]
	bearer := map[string]string{"Authorization": "Bearer " + tok}
	tests := []struct {
		name     string
		method   string
		path     string
		hdr      map[string]string
		body     any
		want     int
		wantBody map[string]string
	}{
		{"register again with token: no new token", "POST", "/registry/register", bearer, reg, 200, map[string]string{"status": "registered"}},
		{"register without bearer", "POST", "/registry/register", nil, reg, 401, map[string]string{"error": "missing workspace auth token"}},
		{"register lowercase bearer", "POST", "/registry/register", map[string]string{"Authorization": "bearer " + tok}, reg, 401, map[string]string{"error": "missing workspace auth token"}},
		{"register wrong token", "POST", "/registry/register", map[string]string{"Authorization": "Bearer nope"}, reg, 401, map[string]string{"error": "invalid workspace auth token"}},
		{"heartbeat with token", "POST", "/registry/heartbeat", bearer, hb, 200, map[string]string{"status": "ok"}},
		{"heartbeat without bearer", "POST", "/registry/heartbeat", nil, hb, 401, map[string]string{"error": "missing workspace auth token"}},
		{"register bad body", "POST", "/registry/register", bearer, map[string]string{"id": id}, 400, map[string]string{"error": "invalid request body"}},
		{"workspace without org header", "GET", "/workspaces/" + id, nil, nil, 404, nil},
		{"workspace wrong org header", "GET", "/workspaces/" + id, map[string]string{workspacetest.OrgHeader: "org-2"}, nil, 404, nil},
		{"register loopback url", "POST", "/registry/register", bearer, withURL(reg, "http://127.0.0.1:8000"), 400, map[string]string{"error": "invalid request body"}},
		{"register TEST-NET url", "POST", "/registry/register", bearer, withURL(reg, "http://192.0.2.2:8000"), 400, map[string]string{"error": "invalid request body"}},
		{"register link-local url", "POST", "/registry/register", bearer, withURL(reg, "http://169.254.169.254:8000"), 400, map[string]string{"error": "invalid request body"}},
		{"register CGNAT url", "POST", "/registry/register", bearer, withURL(reg, "http://100.64.1.1:8000"), 400, map[string]string{"error": "invalid request body"}},
		{"register RFC 1918 url in SaaS mode", "POST", "/registry/register", bearer, withURL(reg, "http://192.168.4.7:8000"), 200, map[string]string{"status": "registered"}},
		{"workspace with org header", "GET", "/workspaces/" + id, map[string]string{workspacetest.OrgHeader: "org-1"}, nil, 200, map[string]string{"id": id, "status": "online"}},
		{"unknown workspace", "GET", "/workspaces/nope", map[string]string{workspacetest.OrgHeader: "org-1"}, nil, 404, map[string]string{"error": "workspace not found"}},
		{"health needs no org", "GET", "/health", nil, nil, 200, map[string]string{"status": "ok"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := do(t, tc.method, ten.URL()+tc.path, tc.hdr, tc.body)
			if code != tc.want {
				t.Errorf("status: got %d, want %d", code, tc.want)
			}
			for k, v := range tc.wantBody {
				if body[k] != v {
					t.Errorf("body[%s]: got %q, want %q", k, body[k], v)
				}
			}
			if _, minted := body["auth_token"]; minted {
				t.Errorf("a token was minted although one is live")
			}
		})
	}
	org := map[string]string{workspacetest.OrgHeader: "org-1"}
	ten.SetStatus(id, "removed")
	if _, b := do(t, "GET", ten.URL()+"/workspaces/"+id, org, nil); b["status"] != "removed" {
		t.Errorf("after SetStatus removed: got %q, want removed", b["status"])
	}
	ten.Delete(id)
	if c, _ := do(t, "GET", ten.URL()+"/workspaces/"+id, org, nil); c != 404 {
		t.Errorf("after Delete: got %d, want 404", c)
	}
}

func withURL(reg map[string]any, u string) map[string]any {
	out := map[string]any{}
	for k, v := range reg {
		out[k] = v
	}
	out["url"] = u
	return out
}

// TestTenantSelfHostedRefusesPrivateURLs: outside SaaS mode RFC 1918 URLs
// are refused too; "localhost" passes by name in both modes.
func TestTenantSelfHostedRefusesPrivateURLs(t *testing.T) {
	for _, o := range []workspacetest.TenantOptions{{}, {Org: "org-1", SelfHosted: true}} {
		ten := workspacetest.NewTenantWith(o)
		for u, want := range map[string]int{"http://10.0.0.5:8000": 400, "http://localhost:8000": 200} {
			reg := map[string]any{"id": "ws-sh", "url": u, "agent_card": map[string]string{"name": "x"}}
			code, body := do(t, "POST", ten.URL()+"/registry/register", nil, reg)
			if code != want {
				t.Errorf("%+v: register %s: got %d %v, want %d", o, u, code, body, want)
			}
			ten.RevokeTokens("ws-sh")
		}
		ten.Close()
	}
}

// TestTenantRemovedWorkspaceMints: a tokenless register of a removed
// workspace answers 200 with a fresh token and leaves it removed, as the
// real tenant does.
func TestTenantRemovedWorkspaceMints(t *testing.T) {
	ten := workspacetest.NewTenant("org-1")
	defer ten.Close()
	const id = "ws-rm"
	ten.IssueToken(id)
	ten.SetStatus(id, "removed") // DELETE /workspaces/:id: removed, tokens revoked
	reg := map[string]any{"id": id, "url": "http://10.0.0.5:8000", "agent_card": map[string]string{"name": "x"}}
	code, body := do(t, "POST", ten.URL()+"/registry/register", nil, reg)
	if code != 200 || len(body["auth_token"]) != 43 {
		t.Fatalf("tokenless register of a removed workspace: got %d %v, want 200 with a fresh token", code, body)
	}
	if got := ten.Status(id); got != "removed" {
		t.Errorf("status: got %q, want removed (never resurrected)", got)
	}
	if !ten.Live(id) || ten.Minted(id) != 1 {
		t.Errorf("live %v minted %d: want the liveness key set and one token minted", ten.Live(id), ten.Minted(id))
	}
}

// TestTenantLiveness: register sets the liveness key; heartbeats keep it;
// once it expires the workspace is offline, and a heartbeat flips the
// status back without bringing the key back (EXPIRE on a missing key).
func TestTenantLiveness(t *testing.T) {
	ten := workspacetest.NewTenantWith(workspacetest.TenantOptions{Org: "org-1", LivenessTTL: 200 * time.Millisecond})
	defer ten.Close()
	const id = "ws-live"
	reg := map[string]any{"id": id, "url": "http://10.0.0.5:8000", "agent_card": map[string]string{"name": "x"}}
	_, body := do(t, "POST", ten.URL()+"/registry/register", nil, reg)
	bearer := map[string]string{"Authorization": "Bearer " + body["auth_token"]}
	if ten.Status(id) != "online" || !ten.Live(id) {
		t.Fatalf("after register: status %q live %v, want online and live", ten.Status(id), ten.Live(id))
	}
	waitFor(t, "offline after the TTL", func() bool { return ten.Status(id) == "offline" })
	if ten.Live(id) {
		t.Errorf("liveness key still there after the TTL")
	}
	if c, _ := do(t, "POST", ten.URL()+"/registry/heartbeat", bearer, map[string]any{"workspace_id": id}); c != 200 {
		t.Fatalf("heartbeat: %d", c)
	}
	if ten.Status(id) != "online" || ten.Live(id) {
		t.Errorf("after a heartbeat: status %q live %v, want online without a liveness key", ten.Status(id), ten.Live(id))
	}
	do(t, "POST", ten.URL()+"/registry/register", bearer, reg)
	if !ten.Live(id) {
		t.Errorf("register did not set the liveness key again")
	}
}

// TestStandinRuntime runs the stand-in runtime against the tenant and checks
// it behaves like molecule-runtime (docs/platform-contract.md §6).
func TestStandinRuntime(t *testing.T) {
	testenv.RequireBinary(t, "go")
	bin, err := workspacetest.BuildRuntime(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	type run struct {
		cmd  *exec.Cmd
		out  *syncBuffer
		dir  string
		port int
	}
	start := func(t *testing.T, platform, id string, extra ...string) *run {
		t.Helper()
		r := &run{out: &syncBuffer{}, dir: t.TempDir(), port: freePort(t)}
		cfg := "name: w\ndescription: d\nversion: 1.0.0\ntier: 2\nruntime: claude-code\nmodel: m\na2a:\n  port: " + strconv.Itoa(r.port) + "\n"
		if err := os.WriteFile(filepath.Join(r.dir, "config.yaml"), []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		r.cmd = exec.Command(bin)
		r.cmd.Env = append([]string{"WORKSPACE_ID=" + id, "PLATFORM_URL=" + platform, "WORKSPACE_CONFIG_PATH=" + r.dir,
			"CONFIGS_DIR=" + r.dir, "HOSTNAME=10.1.2.3", "STANDIN_HEARTBEAT_INTERVAL=100ms"}, extra...)
		r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
		return r
	}
	begin := func(t *testing.T, r *run) {
		t.Helper()
		if err := r.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if r.cmd.ProcessState == nil {
				_ = r.cmd.Process.Kill()
				_ = r.cmd.Wait()
			}
		})
	}
	// term sends SIGTERM and checks the process died by it (143).
	term := func(t *testing.T, r *run) {
		t.Helper()
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
		err := r.cmd.Wait()
		ws, _ := r.cmd.ProcessState.Sys().(syscall.WaitStatus)
		if err == nil || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
			t.Errorf("after SIGTERM: got %v, want death by SIGTERM (status 143)", err)
		}
	}

	t.Run("no config.yaml", func(t *testing.T) {
		dir := t.TempDir()
		cmd := exec.Command(bin)
		cmd.Env = []string{"WORKSPACE_ID=ws-0", "PLATFORM_URL=http://127.0.0.1:1", "WORKSPACE_CONFIG_PATH=" + dir, "CONFIGS_DIR=" + dir}
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Fatalf("got %v (%s), want exit code 1", err, out)
		}
		if !strings.Contains(string(out), "config.yaml not found") {
			t.Errorf("output %q does not say config.yaml is missing", out)
		}
	})

	t.Run("stdout block-buffered, lost at SIGTERM", func(t *testing.T) {
		ten := workspacetest.NewTenant("org-1")
		defer ten.Close()
		const id = "ws-buf"
		tok := ten.IssueToken(id)
		r := start(t, ten.URL(), id)
		if err := os.WriteFile(filepath.Join(r.dir, ".auth_token"), []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
		begin(t, r)
		waitFor(t, "register and 3 heartbeats", func() bool { return ten.Registrations(id) == 1 && ten.Heartbeats(id) >= 3 })
		if strings.Contains(r.out.String(), "Registered with platform") {
			t.Errorf("the register line reached stdout's reader without PYTHONUNBUFFERED: stdout is not block-buffered")
		}
		term(t, r)
		if strings.Contains(r.out.String(), "Registered with platform") {
			t.Errorf("the buffered register line was flushed at SIGTERM; the real runtime drops it")
		}
		for _, req := range ten.Requests() {
			if strings.HasPrefix(req.Path, "/registry/") && req.Header.Get("Authorization") != "Bearer "+tok {
				t.Errorf("%s without the bearer token", req.Path)
			}
		}
	})

	t.Run("PYTHONUNBUFFERED, registers before listening, first heartbeat at once", func(t *testing.T) {
		var r *run
		listening := make(chan bool, 1)
		ten := workspacetest.NewTenantWith(workspacetest.TenantOptions{Org: "org-1", OnRegister: func(string) {
			c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(r.port))
			if err == nil {
				c.Close()
			}
			listening <- err == nil
		}})
		defer ten.Close()
		const id = "ws-unbuf"
		tok := ten.IssueToken(id)
		r = start(t, ten.URL(), id, "PYTHONUNBUFFERED=1", "STANDIN_HEARTBEAT_INTERVAL=1h")
		if err := os.WriteFile(filepath.Join(r.dir, ".auth_token"), []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
		begin(t, r)
		if <-listening {
			t.Errorf("the runtime was listening when it registered; the real one registers first")
		}
		waitFor(t, "the register line", func() bool { return strings.Contains(r.out.String(), "Registered with platform: 200") })
		waitFor(t, "the first heartbeat (interval 1h)", func() bool { return ten.Heartbeats(id) == 1 })
		var resp *http.Response
		waitFor(t, "the agent card", func() bool {
			var err error
			resp, err = http.Get("http://127.0.0.1:" + strconv.Itoa(r.port) + "/.well-known/agent-card.json")
			return err == nil
		})
		var card map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&card)
		resp.Body.Close()
		if card["name"] != "w" || card["url"] != "http://10.1.2.3:"+strconv.Itoa(r.port) {
			t.Errorf("card: got %v", card)
		}
		term(t, r)
	})

	t.Run("mints at first register, saves in place", func(t *testing.T) {
		ten := workspacetest.NewTenant("org-1")
		defer ten.Close()
		const id = "ws-mint"
		r := start(t, ten.URL(), id, "PYTHONUNBUFFERED=1")
		path := filepath.Join(r.dir, ".auth_token")
		// An empty file, as an agent could leave: the runtime treats it as
		// no token and writes the minted one into it, keeping mode and inode.
		if err := os.WriteFile(path, nil, 0o640); err != nil {
			t.Fatal(err)
		}
		before, _ := os.Stat(path)
		begin(t, r)
		waitFor(t, "the saved token", func() bool { return strings.Contains(r.out.String(), "Saved workspace auth token (prefix=") })
		live := ten.Tokens(id)
		b, _ := os.ReadFile(path)
		if len(live) != 1 || string(b) != live[0] {
			t.Fatalf(".auth_token does not hold the minted token")
		}
		after, _ := os.Stat(path)
		if !os.SameFile(before, after) || after.Mode().Perm() != 0o640 {
			t.Errorf("token not saved in place: same file %v, mode %v, want the same inode and mode 0640", os.SameFile(before, after), after.Mode().Perm())
		}
		if !strings.Contains(r.out.String(), "prefix="+live[0][:8]) {
			t.Errorf("the runtime does not print the token prefix like the real one (the agent must redact it)")
		}
		waitFor(t, "heartbeats with the minted token", func() bool { return ten.Heartbeats(id) >= 2 })
		term(t, r)
	})

	t.Run("re-reads the token file until it has one", func(t *testing.T) {
		ten := workspacetest.NewTenant("org-1")
		defer ten.Close()
		const id = "ws-late"
		tok := ten.IssueToken(id)
		r := start(t, ten.URL(), id, "PYTHONUNBUFFERED=1")
		begin(t, r)
		waitFor(t, "the rejected register", func() bool { return strings.Contains(r.out.String(), "Registered with platform: 401") })
		if err := os.WriteFile(filepath.Join(r.dir, ".auth_token"), []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "heartbeats with the token written later", func() bool { return ten.Heartbeats(id) >= 1 })
		term(t, r)
	})

	t.Run("platform unreachable", func(t *testing.T) {
		r := start(t, "http://127.0.0.1:"+strconv.Itoa(freePort(t)), "ws-down", "PYTHONUNBUFFERED=1")
		begin(t, r)
		waitFor(t, "the warning", func() bool {
			return strings.Contains(r.out.String(), "Warning: failed to register with platform: ")
		})
		term(t, r)
	})
}

// syncBuffer is a bytes.Buffer safe for the process's writes and the test's reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testenv.Long)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTenantTokenCap: at most MaxTokens live tokens per workspace.
func TestTenantTokenCap(t *testing.T) {
	ten := workspacetest.NewTenant("org-1")
	defer ten.Close()
	for i := range workspacetest.MaxTokens {
		if ten.IssueToken("ws-cap") == "" {
			t.Fatalf("token %d refused below the cap", i+1)
		}
	}
	if tok := ten.IssueToken("ws-cap"); tok != "" {
		t.Errorf("token %d issued beyond the cap of %d", workspacetest.MaxTokens+1, workspacetest.MaxTokens)
	}
}
