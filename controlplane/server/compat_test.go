package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
)

// The previous agent's wire format, frozen as literals: what it sends and
// what it parses. An agent and a control plane one version apart must
// interoperate, so a field added to the contract is optional on both sides
// and these bodies keep working. Change them only when the previous release
// itself changes.
const (
	prevRegister = `{"enrollment_token":"TOKEN","machine_id":"m-prev","agent_version":"0.9.0","boot_id":"boot-prev","hostname":"prev-1"}`
	prevBeat     = `{"agent_version":"0.9.0","boot_id":"boot-prev",` +
		`"units":[{"name":"platform","state":"ready","restarts":0,` +
		`"image":"127.0.0.1:5000/platform@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",` +
		`"image_digest":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","since":"2026-11-30T10:00:00Z"},` +
		`{"name":"cloudflared","state":"backoff","restarts":2,"detail":"restarting in 1s"}],` +
		`"tunnel":{"id":"tun-prev","ready_connections":4},` +
		`"boot":[{"step":"params","at":"2026-11-30T09:59:58Z"},{"step":"registered","at":"2026-11-30T09:59:59Z"}],` +
		`"applied_revision":1,` +
		`"updates":[{"unit":"platform","digest":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","phase":"committed"}]}`
	// The previous control plane's replies, as the new agent must parse them.
	prevRegisterReply = `{"host_id":"3f1c9a4e-0000-4000-8000-000000000001","host_token":"mh_prev","heartbeat_interval_ms":10000,"org":"acme","role":"workspace","workspace":"ws-1","channel":"stable"}`
	prevBeatReply     = `{"heartbeat_interval_ms":10000,"desired":{"revision":3,"images":{"platform":"127.0.0.1:5000/platform@sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}}}`
)

// TestPreviousAgentAgainstThisServer posts the previous agent's literal
// bodies to this server and checks the replies carry what it parses, with
// the types it parses them as.
func TestPreviousAgentAgainstThisServer(t *testing.T) {
	f := newFixture(t)
	if err := f.admin.SetChannelImages(context.Background(), "stable", map[string]string{"platform": imgB}); err != nil {
		t.Fatal(err)
	}
	tok, err := f.admin.CreateEnrollmentToken(context.Background(), api.EnrollmentTokenRequest{Org: "acme", Role: "workspace", Workspace: "ws-1", Channel: "stable"})
	if err != nil {
		t.Fatal(err)
	}
	reg := postLiteral(t, f.http.URL+"/v1/register", "", strings.Replace(prevRegister, "TOKEN", tok.Token, 1), http.StatusCreated)
	hostID, _ := reg["host_id"].(string)
	hostToken, _ := reg["host_token"].(string)
	if _, ok := reg["heartbeat_interval_ms"].(float64); !ok || hostID == "" || hostToken == "" {
		t.Fatalf("register reply %v: want host_id, host_token and a numeric heartbeat_interval_ms", reg)
	}
	beat := postLiteral(t, f.http.URL+"/v1/hosts/"+hostID+"/heartbeat", hostToken, prevBeat, http.StatusOK)
	desired, _ := beat["desired"].(map[string]any)
	images, _ := desired["images"].(map[string]any)
	if _, ok := beat["heartbeat_interval_ms"].(float64); !ok {
		t.Errorf("heartbeat reply %v: want a numeric heartbeat_interval_ms", beat)
	}
	if _, ok := desired["revision"].(float64); !ok || images["platform"] != imgB {
		t.Errorf("heartbeat reply %v: want desired.revision (number) and desired.images.platform = %s", beat, imgB)
	}
	// The tunnel ID reported becomes the org's at the flush (the first one
	// reported binds it).
	if err := f.srv.flush(context.Background(), f.srv.store.Flush); err != nil {
		t.Fatal(err)
	}
	h, err := f.admin.GetHost(context.Background(), hostID)
	if err != nil {
		t.Fatal(err)
	}
	if h.Report == nil || len(h.Report.Units) != 2 || h.Report.Tunnel == nil || h.Report.Tunnel.ID != "tun-prev" || h.TunnelID != "tun-prev" {
		t.Errorf("stored report of the previous agent: %+v, want its 2 units and tunnel tun-prev", h.Report)
	}
}

// TestThisAgentParsesPreviousServer decodes the previous control plane's
// literal replies with this agent's types.
func TestThisAgentParsesPreviousServer(t *testing.T) {
	var reg api.RegisterResponse
	if err := json.Unmarshal([]byte(prevRegisterReply), &reg); err != nil || reg.HostID == "" || reg.HostToken == "" || reg.Interval().Seconds() != 10 {
		t.Errorf("register reply decoded as %+v (%v), want host ID, token and a 10 s interval", reg, err)
	}
	var beat api.HeartbeatResponse
	if err := json.Unmarshal([]byte(prevBeatReply), &beat); err != nil || beat.Interval().Seconds() != 10 || beat.Desired.Revision != 3 || beat.Desired.Images["platform"] != imgB {
		t.Errorf("heartbeat reply decoded as %+v (%v), want a 10 s interval and revision 3 with platform %s", beat, err, imgB)
	}
}

func postLiteral(t *testing.T, url, token, body string, want int) map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("POST %s: %d %s, want %d", url, resp.StatusCode, b, want)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("POST %s: reply %q is not a JSON object: %v", url, b, err)
	}
	return out
}
