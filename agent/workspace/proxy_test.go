//go:build unix

package workspace_test

import (
	"bytes"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/molecule-ai/molecule-agent/agent/workspace"
	"github.com/molecule-ai/molecule-agent/agent/workspace/workspacetest"
)

func TestProxy(t *testing.T) {
	ten := workspacetest.NewTenant(orgID)
	defer ten.Close()
	ten.AddWorkspace(workspaceID)
	logs := &testenv.Buffer{}
	p, err := workspace.ListenProxy("127.0.0.1:0", ten.URL(), orgID, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	body := make([]byte, 4096)
	for i := range body {
		body[i] = byte(i)
	}
	const secretTok = "Bearer tok-must-pass-through-untouched-0123456789"
	tests := []struct {
		name   string
		method string
		path   string
		spoof  []string // client-sent org header values
		body   []byte
		want   int
	}{
		{"header injected", http.MethodPost, "/workspaces/" + workspaceID + "/notify?since=1&limit=2", nil, body, 200},
		{"spoofed header replaced", http.MethodPost, "/workspaces/" + workspaceID + "/notify", []string{"org-evil"}, body, 200},
		{"several spoofed values replaced", http.MethodPost, "/workspaces/" + workspaceID + "/notify", []string{"org-evil", orgID}, []byte(`{"a":1}`), 200},
		{"GET passes the guard", http.MethodGet, "/workspaces/" + workspaceID, []string{"org-evil"}, nil, 200},
		{"registry still works", http.MethodPost, "/registry/heartbeat", nil, []byte(`{"workspace_id":"` + workspaceID + `"}`), 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(ten.Requests())
			req, err := http.NewRequest(tc.method, p.URL()+tc.path, bytes.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", secretTok)
			req.Header.Set("X-Workspace-ID", workspaceID)
			req.Header.Set("Content-Type", "application/octet-stream")
			req.Header.Add("X-Custom", "a")
			req.Header.Add("X-Custom", "b")
			for _, v := range tc.spoof {
				req.Header.Add(workspace.OrgHeader, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			respBody, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status: got %d, want %d (%s)", resp.StatusCode, tc.want, respBody)
			}
			if resp.Header.Get("Content-Type") != "application/json" || !bytes.HasPrefix(respBody, []byte("{")) {
				t.Errorf("response: got %q %q, want the tenant's JSON untouched", resp.Header.Get("Content-Type"), respBody)
			}
			reqs := ten.Requests()
			if len(reqs) != before+1 {
				t.Fatalf("tenant got %d requests, want 1", len(reqs)-before)
			}
			got := reqs[before]
			if v := got.Header.Values(workspace.OrgHeader); !slices.Equal(v, []string{orgID}) {
				t.Errorf("org header: got %q, want exactly [%s]", v, orgID)
			}
			for k, want := range map[string][]string{"Authorization": {secretTok}, "X-Workspace-Id": {workspaceID},
				"Content-Type": {"application/octet-stream"}, "X-Custom": {"a", "b"}} {
				if v := got.Header.Values(k); !slices.Equal(v, want) {
					t.Errorf("header %s: got %q, want %q", k, v, want)
				}
			}
			if !bytes.Equal(got.Body, tc.body) && !(len(got.Body) == 0 && len(tc.body) == 0) {
				t.Errorf("body: got %d bytes, want the %d bytes sent, unchanged", len(got.Body), len(tc.body))
			}
			if got.Method != tc.method || got.Path != strings.Split(tc.path, "?")[0] {
				t.Errorf("request: got %s %s, want %s %s", got.Method, got.Path, tc.method, tc.path)
			}
		})
	}

	t.Run("tenant down", func(t *testing.T) {
		down := workspacetest.NewTenant(orgID)
		url := down.URL()
		down.Close()
		dp, err := workspace.ListenProxy("127.0.0.1:0", url, orgID, slog.New(slog.NewTextHandler(logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		defer dp.Close()
		req, _ := http.NewRequest(http.MethodGet, dp.URL()+"/workspaces/x?token=q-secret", nil)
		req.Header.Set("Authorization", secretTok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("status: got %d, want 502", resp.StatusCode)
		}
		if !strings.Contains(logs.String(), "tenant request failed") {
			t.Errorf("proxy error not logged: %q", logs.String())
		}
		if strings.Contains(logs.String(), "tok-must-pass") || strings.Contains(logs.String(), "q-secret") {
			t.Errorf("proxy log holds the Authorization header or the query: %q", logs.String())
		}
	})
}

func TestProxyOptions(t *testing.T) {
	tests := []struct {
		name, addr, target, org, wantErr string
	}{
		{"all interfaces", "0.0.0.0:0", "http://10.0.0.1:8080", "o", "loopback"},
		{"private address", "10.0.0.1:8081", "http://10.0.0.1:8080", "o", "loopback"},
		{"host name", "localhost:8081", "http://10.0.0.1:8080", "o", "loopback"},
		{"bad target", "127.0.0.1:0", "10.0.0.1:8080", "o", "proxy target"},
		{"no org", "127.0.0.1:0", "http://10.0.0.1:8080", "", "org id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := workspace.ListenProxy(tc.addr, tc.target, tc.org, nil)
			if err == nil {
				_ = p.Close()
				t.Fatalf("got no error, want one about %q", tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("got %q, want it to mention %q", err, tc.wantErr)
			}
		})
	}
}
