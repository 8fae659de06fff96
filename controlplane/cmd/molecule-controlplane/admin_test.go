package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
	"github.com/molecule-ai/molecule-agent/controlplane/events"
)

const (
	goodImg = "127.0.0.1:5000/platform@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	hookSec = "webhook-shared-secret-0123456789"
)

// hookReceiver verifies signatures and fails the first two deliveries.
type hookReceiver struct {
	mu       sync.Mutex
	calls    int
	badSig   int
	accepted []events.Event
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	if err := events.Verify(secret.New(hookSec), r.Header.Get(events.SignatureHeader), b, time.Now(), time.Minute); err != nil {
		h.badSig++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if h.calls <= 2 {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	var e events.Event
	_ = json.Unmarshal(b, &e)
	h.accepted = append(h.accepted, e)
}

// TestAdminCommandsAndWebhook runs the real binary with a webhook for
// deprovisions, drives it with the admin subcommands, and checks the
// webhook: signed, retried after 500s, carrying the tunnel ID.
func TestAdminCommandsAndWebhook(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	const adminTok = "admin-cmd-token-0123456789"
	tokFile := filepath.Join(dir, "admin-token")
	secFile := filepath.Join(dir, "hook.secret")
	hooksFile := filepath.Join(dir, "hooks.json")
	rcv := &hookReceiver{}
	hook := httptest.NewServer(rcv)
	defer hook.Close()
	for p, b := range map[string]string{tokFile: adminTok, secFile: hookSec,
		hooksFile: `{"hooks":[{"name":"provisioner","url":"` + hook.URL + `","kinds":["removed"],"secret_file":"` + secFile + `"}]}`} {
		if err := os.WriteFile(p, []byte(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	addr := freeAddr(t)
	url := "http://" + addr
	cp := startBinary(t, "serve", "--listen", addr, "--db", "sqlite://"+filepath.Join(dir, "cp.db"), "--admin-token-file", tokFile,
		"--interval", "1s", "--flush-window", "1s", "--host-rate", "20", "--webhooks", hooksFile, "--rollout-bake", "1s")
	waitHealthy(t, url)
	admin, _ := api.New(api.Options{BaseURL: url, AdminToken: secret.New(adminTok)})
	tok, err := admin.CreateEnrollmentToken(ctx, api.EnrollmentTokenRequest{Org: "acme", Role: "tenant", Channel: "stable"})
	if err != nil {
		t.Fatal(err)
	}
	ag := startAgent(t, url, filepath.Join(dir, "a1"), func(context.Context) (api.Proof, error) {
		return api.Proof{EnrollmentToken: secret.New(tok.Token), MachineID: "m-admin"}, nil
	}, "tun-admin-1")
	eventually(t, testenv.Short, "the agent heartbeating", func() bool { return ag.beats.Load() >= 2 })
	hostID := ag.loop.Status().HostID

	cli := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(ctx, append(args, "--url", url, "--admin-token-file", tokFile), env{}, &out)
		return out.String(), err
	}
	tests := []struct {
		name    string
		args    []string
		want    []string
		wantErr string
	}{
		{"hosts list", []string{"hosts", "list"}, []string{"ID", "STATUS", hostID, "online", "ready(4)", "cloudflared=ready"}, ""},
		{"hosts list filtered out", []string{"hosts", "list", "--org", "other"}, []string{"ID"}, ""},
		{"hosts list json", []string{"hosts", "list", "--json"}, []string{`"hosts"`, `"id": "` + hostID}, ""},
		{"hosts show", []string{"hosts", "show", hostID}, []string{"Org:", "acme", "tun-admin-1", "cloudflared"}, ""},
		{"hosts show missing", []string{"hosts", "show", "nope"}, nil, "404"},
		{"release set refuses a tag", []string{"release", "set", "stable", "platform=repo:latest"}, nil, "never a tag"},
		{"release set", []string{"release", "set", "stable", "platform=" + goodImg, "--canary", "1"}, []string{"stable", "rolling", "1/1", goodImg}, ""},
		{"release status", []string{"release", "status", "stable", "--json"}, []string{`"state": "rolling"`, `"channel": "stable"`}, ""},
		{"release status all", []string{"release", "status"}, []string{"CHANNEL", "stable"}, ""},
		{"release pause", []string{"release", "pause", "stable", "--reason", "lunch"}, []string{"paused", "lunch"}, ""},
		{"release pause again", []string{"release", "pause", "stable"}, nil, "409"},
		{"release resume", []string{"release", "resume", "stable"}, []string{"rolling"}, ""},
		{"release rollback", []string{"release", "rollback", "stable"}, []string{"rolled_back"}, ""},
		{"release status of no channel", []string{"release", "status", "nope"}, nil, "404"},
		{"hosts deprovision", []string{"hosts", "deprovision", hostID}, []string{hostID, "removed", "tun-admin-1"}, ""},
		{"token never from argv", []string{"hosts", "list", "--admin-token", "x"}, nil, "unknown flag"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := cli(tc.args...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v: %v", tc.args, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(out, adminTok) {
				t.Error("output holds the admin token")
			}
		})
	}

	// The webhook: two 500s, then accepted; every attempt signed and recorded.
	eventually(t, testenv.Long, "the deprovision webhook accepted", func() bool {
		rcv.mu.Lock()
		defer rcv.mu.Unlock()
		return len(rcv.accepted) > 0
	})
	rcv.mu.Lock()
	got, calls, bad := rcv.accepted[0], rcv.calls, rcv.badSig
	rcv.mu.Unlock()
	if got.Kind != events.KindDeprovisioned || got.HostID != hostID || got.TunnelID != "tun-admin-1" {
		t.Errorf("webhook event = %+v, want the deprovision of %s with tunnel tun-admin-1", got, hostID)
	}
	if calls != 3 || bad != 0 {
		t.Errorf("webhook calls = %d (bad signatures %d), want 3 signed attempts", calls, bad)
	}
	// The event feed, once flushed, holds the rollout's and the host's events.
	eventually(t, testenv.Short, "events flushed", func() bool {
		out, err := cli("events", "--since", "0", "--limit", "1000")
		return err == nil && strings.Contains(out, "rollout_started") && strings.Contains(out, "rollout_rolled_back") &&
			strings.Contains(out, "tunnel tun-admin-1")
	})
	cp.term()
	if strings.Contains(cp.stderr.String(), hookSec) || strings.Contains(cp.stderr.String(), adminTok) {
		t.Error("the control plane logged a secret")
	}
	if !strings.Contains(cp.stderr.String(), "webhook delivery failed; retrying") {
		t.Errorf("no retry logged:\n%s", cp.stderr.String())
	}
}
