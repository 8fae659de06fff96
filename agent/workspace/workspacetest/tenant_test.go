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
		{"workspace without org header", "GET", "/workspaces/" + id, nil, nil, 404, map[string]string{"error": "not found"}},
		{"workspace wrong org header", "GET", "/workspaces/" + id, map[string]string{workspacetest.OrgHeader: "org-2"}, nil, 404, map[string]string{"error": "not found"}},
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

// TestStandinRuntime runs the stand-in runtime against the tenant: it
// registers with the token from the file, heartbeats, serves its card, and
// refuses to start without config.yaml.
func TestStandinRuntime(t *testing.T) {
	testenv.RequireBinary(t, "go")
	bin, err := workspacetest.BuildRuntime(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ten := workspacetest.NewTenant("org-1")
	defer ten.Close()
	const id = "ws-2"
	tok := ten.IssueToken(id)
	dir := t.TempDir()
	port := freePort(t)

	t.Run("no config.yaml", func(t *testing.T) {
		cmd := exec.Command(bin)
		cmd.Env = []string{"WORKSPACE_ID=" + id, "PLATFORM_URL=" + ten.URL(), "WORKSPACE_CONFIG_PATH=" + dir, "CONFIGS_DIR=" + dir}
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Fatalf("got %v (%s), want exit code 1", err, out)
		}
		if !strings.Contains(string(out), "config.yaml not found") {
			t.Errorf("output %q does not say config.yaml is missing", out)
		}
	})

	t.Run("registers and heartbeats", func(t *testing.T) {
		cfg := "name: w\ndescription: d\nversion: 1.0.0\ntier: 2\nruntime: claude-code\nmodel: m\na2a:\n  port: " + strconv.Itoa(port) + "\n"
		if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, ".auth_token"), []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		cmd := exec.Command(bin)
		cmd.Env = []string{"WORKSPACE_ID=" + id, "PLATFORM_URL=" + ten.URL(), "WORKSPACE_CONFIG_PATH=" + dir,
			"CONFIGS_DIR=" + dir, "HOSTNAME=127.0.0.1", "STANDIN_HEARTBEAT_INTERVAL=100ms"}
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "3 heartbeats", func() bool { return ten.Heartbeats(id) >= 3 })
		if got := ten.Status(id); got != "online" {
			t.Errorf("status: got %q, want online", got)
		}
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/.well-known/agent-card.json")
		if err != nil {
			t.Fatal(err)
		}
		var card map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&card)
		resp.Body.Close()
		if card["name"] != "w" || card["url"] != "http://127.0.0.1:"+strconv.Itoa(port) {
			t.Errorf("card: got %v", card)
		}
		_ = cmd.Process.Signal(os.Interrupt)
		if err := cmd.Wait(); err != nil {
			t.Errorf("exit after SIGINT: %v", err)
		}
		for _, r := range ten.Requests() {
			if strings.HasPrefix(r.Path, "/registry/") && r.Header.Get("Authorization") != "Bearer "+tok {
				t.Errorf("%s without the bearer token", r.Path)
			}
		}
		if !strings.Contains(out.String(), "Registered with platform: 200") {
			t.Errorf("output %q lacks the register line", out.String())
		}
		if strings.Contains(out.String(), tok) || strings.Contains(out.String(), tok[:8]) {
			t.Errorf("output leaks the token")
		}
	})
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
