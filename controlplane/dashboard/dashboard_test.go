package dashboard_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
	"github.com/molecule-ai/molecule-agent/controlplane/rollout"
	"github.com/molecule-ai/molecule-agent/controlplane/server"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	adminToken = "dashboard-admin-token-0123456789"
	oldImg     = "127.0.0.1:5000/platform@sha256:1111111111111111111111111111111111111111111111111111111111111111"
	newImg     = "127.0.0.1:5000/platform@sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

// controlPlane is a real control plane on SQLite with three hosts of two
// orgs heartbeating and a rollout in progress.
type controlPlane struct {
	url    string
	hosts  []api.Registration
	tokens []string
}

func startControlPlane(t *testing.T) *controlPlane {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := store.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "cp.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(ctx, server.Config{Store: st, AdminToken: secret.New(adminToken), Interval: time.Second,
		FlushWindow: 100 * time.Millisecond, HostBurst: 20, HostRate: 20})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		hs.Close()
		cancel()
		<-done
		_ = st.Close()
	})
	cp := &controlPlane{url: hs.URL}
	admin, _ := api.New(api.Options{BaseURL: hs.URL, AdminToken: secret.New(adminToken), HTTPClient: hs.Client()})
	agent, _ := api.New(api.Options{BaseURL: hs.URL, HTTPClient: hs.Client()})
	if err := admin.SetChannelImages(ctx, "stable", map[string]string{"platform": oldImg}); err != nil {
		t.Fatal(err)
	}
	for i, org := range []string{"acme", "acme", "globex"} {
		tok, err := admin.CreateEnrollmentToken(ctx, api.EnrollmentTokenRequest{Org: org, Role: api.RoleTenant, Channel: "stable"})
		if err != nil {
			t.Fatal(err)
		}
		cp.tokens = append(cp.tokens, tok.Token)
		reg, err := agent.Register(ctx, api.Proof{EnrollmentToken: secret.New(tok.Token), MachineID: fmt.Sprintf("machine-%d", i)},
			secret.Secret{}, api.RegisterRequest{AgentVersion: "1.4.2", BootID: "boot-1", Hostname: fmt.Sprintf("tenant-%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		cp.hosts = append(cp.hosts, reg)
		if _, err := agent.Heartbeat(ctx, reg.HostID, reg.HostToken, api.HeartbeatRequest{AgentVersion: "1.4.2", BootID: "boot-1",
			Tunnel: &api.TunnelStatus{ID: fmt.Sprintf("tun-%d", i), ReadyConnections: 4 * (i % 2)},
			Units: []api.UnitStatus{
				{Name: "postgres", State: api.UnitReady, Image: "postgres@sha256:" + strings.Repeat("3", 64)},
				{Name: "platform", State: api.UnitReady, Image: oldImg},
				{Name: "cloudflared", State: api.UnitReady},
			}}); err != nil {
			t.Fatal(err)
		}
	}
	body, _ := json.Marshal(rollout.Request{Images: map[string]string{"platform": newImg},
		RolloutPolicy: rollout.Policy{Canary: 1, BatchPercent: 50, BakeMS: 60000, WaveTimeoutMS: 600000}})
	req, _ := http.NewRequest("POST", hs.URL+"/v1/admin/channels/stable/rollouts", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := hs.Client().Do(req)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("start rollout: %v %v", resp, err)
	}
	_ = resp.Body.Close()
	return cp
}

// TestDashboardInChromium logs in through the form in headless Chromium,
// checks the page lists the hosts and hides every secret, and takes a
// screenshot (copied to testdata/screenshot.png with UPDATE_SCREENSHOT=1).
func TestDashboardInChromium(t *testing.T) {
	testenv.RequireBinary(t, "chromium")
	cp := startControlPlane(t)
	ctx := context.Background()
	b := startBrowser(t)
	p, err := b.open(ctx, cp.url+"/dashboard")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.call(ctx, p.session, "Emulation.setDeviceMetricsOverride",
		map[string]any{"width": 1500, "height": 1000, "deviceScaleFactor": 1, "mobile": false}); err != nil {
		t.Fatal(err)
	}
	p.waitFor(ctx, t, "the login form", `document.querySelector('#token') !== null`)
	tok, _ := json.Marshal(adminToken)
	if err := p.eval(ctx, `document.querySelector('#token').value = `+string(tok)+`; document.querySelector('form').submit(); true`, nil); err != nil {
		t.Fatal(err)
	}
	p.waitFor(ctx, t, "three hosts listed", `document.querySelectorAll('tr.host').length === 3`)
	var html, cookie string
	if err := p.eval(ctx, `document.documentElement.outerHTML`, &html); err != nil {
		t.Fatal(err)
	}
	for _, h := range cp.hosts {
		if !strings.Contains(html, h.HostID) {
			t.Errorf("page lacks host %s", h.HostID)
		}
	}
	for _, want := range []string{"globex", "tenant-2", "1.4.2", "sha256:222222222222", "wave 1: 0/1 updating", "wave 2: 0/2 waiting", "rolling", "not ready", "registered"} {
		if !strings.Contains(html, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	secrets := []string{adminToken}
	for i, h := range cp.hosts {
		secrets = append(secrets, h.HostToken.Reveal(), cp.tokens[i])
	}
	for _, s := range secrets {
		if strings.Contains(html, s) {
			t.Error("the page shows a secret")
		}
	}
	if err := p.eval(ctx, `document.cookie`, &cookie); err != nil || cookie != "" {
		t.Errorf("document.cookie = %q, %v; want the session hidden from scripts (HttpOnly)", cookie, err)
	}
	// Filter by org: only the globex host remains.
	if err := p.eval(ctx, `location.href = '/dashboard?org=globex'; true`, nil); err != nil {
		t.Fatal(err)
	}
	p.waitFor(ctx, t, "the org filter", `location.search === '?org=globex' && document.readyState === 'complete' && document.querySelectorAll('tr.host').length === 1`)
	if err := p.eval(ctx, `location.href = '/dashboard'; true`, nil); err != nil {
		t.Fatal(err)
	}
	p.waitFor(ctx, t, "all hosts again", `location.search === '' && document.readyState === 'complete' && document.querySelectorAll('tr.host').length === 3`)

	res, err := b.call(ctx, p.session, "Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true})
	if err != nil {
		t.Fatal(err)
	}
	var shot struct {
		Data string `json:"data"`
	}
	_ = json.Unmarshal(res, &shot)
	png, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil || len(png) < 10000 || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("screenshot: %d bytes, %v; want a PNG of the page", len(png), err)
	}
	out := filepath.Join(t.TempDir(), "screenshot.png")
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", out, len(png))
	if os.Getenv("UPDATE_SCREENSHOT") == "1" {
		if err := os.WriteFile(filepath.Join("testdata", "screenshot.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
