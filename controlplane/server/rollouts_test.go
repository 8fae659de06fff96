package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
	"github.com/molecule-ai/molecule-agent/controlplane/dashboard"
	"github.com/molecule-ai/molecule-agent/controlplane/events"
	"github.com/molecule-ai/molecule-agent/controlplane/rollout"
)

const (
	imgA = "127.0.0.1:5000/platform@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	imgB = "127.0.0.1:5000/platform@sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	imgC = "127.0.0.1:5000/platform@sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
)

type rolloutHost struct {
	reg api.Registration
	rep api.HeartbeatRequest
}

// beat sends the host's report and returns the desired state it is given.
func (f *fixture) beat(h *rolloutHost) api.DesiredState {
	f.t.Helper()
	f.clock.Add(time.Second) // one token of the host's rate limit
	resp, err := f.agent.Heartbeat(context.Background(), h.reg.HostID, h.reg.HostToken, h.rep)
	if err != nil {
		f.t.Fatalf("heartbeat of %s: %v", h.reg.HostID, err)
	}
	return resp.Desired
}

func runs(img, state string, updates ...api.UpdateStatus) api.HeartbeatRequest {
	dg := img[strings.Index(img, "@")+1:]
	return api.HeartbeatRequest{AgentVersion: "1.0.0", BootID: "b", Units: []api.UnitStatus{{Name: "platform", State: state, Image: img, ImageDigest: dg}},
		Tunnel: &api.TunnelStatus{ID: "tun-x", ReadyConnections: 1}, Updates: updates}
}

func (f *fixture) adminDo(method, path string, body any, out any) int {
	f.t.Helper()
	var r io.Reader
	if body != nil {
		r = strings.NewReader(string(mustJSON(body)))
	}
	req, _ := http.NewRequest(method, f.http.URL+path, r)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := f.http.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if out != nil {
		_ = json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

func TestRollout(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	var hosts []*rolloutHost
	for i := range 3 {
		inst := fmt.Sprintf("i-%d", i)
		f.declare(inst)
		reg, err := f.registerIMDS(inst, "boot", secret.Secret{})
		if err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, &rolloutHost{reg: reg, rep: runs(imgA, api.UnitReady)})
	}
	slices.SortFunc(hosts, func(a, b *rolloutHost) int { return strings.Compare(a.reg.HostID, b.reg.HostID) })
	if err := f.admin.SetChannelImages(ctx, "stable", map[string]string{"platform": imgA}); err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		f.beat(h)
	}
	var e api.Error
	if code := f.adminDo("POST", "/v1/admin/channels/stable/rollouts", rollout.Request{Images: map[string]string{"platform": "repo:latest"}}, &e); code != 400 || e.Field != "images" {
		t.Fatalf("rollout of a tag: %d %+v, want 400 naming images", code, e)
	}
	policy := rollout.Policy{Canary: 1, BatchPercent: 25, BakeMS: 1000, WaveTimeoutMS: 30000}
	var ro rollout.Rollout
	if code := f.adminDo("POST", "/v1/admin/channels/stable/rollouts", rollout.Request{Images: map[string]string{"platform": imgB}, RolloutPolicy: policy}, &ro); code != 201 {
		t.Fatalf("start rollout: %d", code)
	}
	// wants checks each host's desired image, in host order.
	wants := func(step string, imgs ...string) {
		t.Helper()
		for i, h := range hosts {
			if got := f.beat(h).Images["platform"]; got != imgs[i] {
				t.Errorf("%s: host %d desired %s, want %s", step, i, got, imgs[i])
			}
		}
	}
	wants("canary started", imgB, imgA, imgA)
	for i := range hosts {
		hosts[i].rep = runs(imgB, api.UnitReady, api.UpdateStatus{Unit: "platform", Digest: imgB, Phase: "committed"})
		f.beat(hosts[i])
		f.srv.rollouts.Tick(ctx) // all ready since now
		f.clock.Add(2 * time.Second)
		f.srv.rollouts.Tick(ctx) // baked: the next wave starts
		if i < 2 {
			want := []string{imgB, imgB, imgA}
			if i == 1 {
				want[2] = imgB
			}
			wants(fmt.Sprintf("after wave %d", i+1), want...)
		}
	}
	if got, _ := f.srv.rollouts.Get("stable"); got.State != rollout.StateCompleted {
		t.Fatalf("rollout state %s, want completed", got.State)
	}

	// A never-ready digest: the canary rolls back, the rollout halts, and
	// the others are never given it.
	if code := f.adminDo("POST", "/v1/admin/channels/stable/rollouts", rollout.Request{Images: map[string]string{"platform": imgC}, RolloutPolicy: policy}, &ro); code != 201 {
		t.Fatalf("start rollout: %d", code)
	}
	wants("bad canary", imgC, imgB, imgB)
	hosts[0].rep = runs(imgB, api.UnitReady, api.UpdateStatus{Unit: "platform", Digest: imgC, Phase: "rolled_back", Detail: "not ready within 60s"})
	f.beat(hosts[0])
	f.srv.rollouts.Tick(ctx)
	f.adminDo("GET", "/v1/admin/channels/stable/rollout", nil, &ro)
	if ro.State != rollout.StateHalted || !strings.Contains(ro.Reason, hosts[0].reg.HostID) {
		t.Fatalf("rollout = %s (%s), want halted naming the canary", ro.State, ro.Reason)
	}
	f.clock.Add(time.Hour)
	f.srv.rollouts.Tick(ctx)
	wants("halted", imgC, imgB, imgB)
	if code := f.adminDo("POST", "/v1/admin/channels/stable/rollout/pause", nil, nil); code != 409 {
		t.Errorf("pausing a halted rollout: %d, want 409", code)
	}
	if code := f.adminDo("POST", "/v1/admin/channels/stable/rollout/rollback", api.RolloutAction{Reason: "bad build"}, &ro); code != 200 || ro.State != rollout.StateRolledBack {
		t.Fatalf("rollback: %d %s", code, ro.State)
	}
	wants("rolled back", imgB, imgB, imgB)
	if code := f.adminDo("POST", "/v1/admin/channels/nope/rollout/resume", nil, nil); code != 404 {
		t.Errorf("resume without a rollout: %d, want 404", code)
	}

	// The event feed pages through what happened.
	if err := f.srv.flush(ctx, f.srv.store.Flush); err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for since := int64(0); ; {
		var p events.Page
		if code := f.adminDo("GET", fmt.Sprintf("/v1/events?since=%d&limit=3", since), nil, &p); code != 200 {
			t.Fatalf("events: %d", code)
		}
		if len(p.Events) == 0 {
			break
		}
		for _, e := range p.Events {
			if e.ID <= since {
				t.Fatalf("event %d returned after since=%d", e.ID, since)
			}
			kinds = append(kinds, e.Kind)
		}
		since = p.Next
	}
	for _, k := range []string{events.KindRegistered, events.KindUpdateCommitted, events.KindRolloutCompleted,
		events.KindUpdateRolledBack, events.KindRolloutHalted, events.KindRolloutRolledBack} {
		if !slices.Contains(kinds, k) {
			t.Errorf("event feed lacks %s: %v", k, kinds)
		}
	}
	if code := f.adminDo("GET", "/v1/events?since=-1", nil, &e); code != 400 || e.Field != "since" {
		t.Errorf("since=-1: %d %+v, want 400 naming since", code, e)
	}

	// A restarted server serves the same desired state from the stored rollout.
	f.stop()
	f.start()
	if got, err := f.srv.rollouts.Get("stable"); err != nil || got.State != rollout.StateRolledBack {
		t.Fatalf("after restart: %+v, %v", got.State, err)
	}
	wants("after restart", imgB, imgB, imgB)
}

func TestDashboardSession(t *testing.T) {
	f := newFixture(t)
	f.declare("i-dash")
	reg, err := f.registerIMDS("i-dash", "boot", secret.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	f.beat(&rolloutHost{reg: reg, rep: runs(imgA, api.UnitReady)})
	noRedirect := &http.Client{Transport: f.http.Client().Transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(cookie *http.Cookie) string {
		req, _ := http.NewRequest("GET", f.http.URL+dashboard.Path, nil)
		if cookie != nil {
			req.AddCookie(cookie)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	login := func(token, origin string) *http.Response {
		req, _ := http.NewRequest("POST", f.http.URL+dashboard.Path+"/login", strings.NewReader(url.Values{"token": {token}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp
	}
	if page := get(nil); !strings.Contains(page, `name="token"`) || strings.Contains(page, reg.HostID) {
		t.Fatal("without a session the dashboard did not show only the login form")
	}
	if resp := login("wrong", ""); resp.StatusCode != 401 || len(resp.Cookies()) != 0 {
		t.Errorf("wrong token: %d with %d cookies, want 401 and none", resp.StatusCode, len(resp.Cookies()))
	}
	if resp := login(adminToken, "https://evil.example"); resp.StatusCode != 403 {
		t.Errorf("cross-site login: %d, want 403", resp.StatusCode)
	}
	resp := login(adminToken, f.http.URL)
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 {
		t.Fatalf("login: %d with %d cookies, want 303 and a session", resp.StatusCode, len(resp.Cookies()))
	}
	c := resp.Cookies()[0]
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != dashboard.Path || len(c.Value) != 64 {
		t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/dashboard, a 256-bit random ID", c)
	}
	page := get(c)
	if !strings.Contains(page, reg.HostID) || !strings.Contains(page, "platform ready") || !strings.Contains(page, "sha256:aaaaaaaaaaaa") {
		t.Errorf("dashboard lacks the host, its unit or its digest:\n%s", page)
	}
	for _, s := range []string{adminToken, reg.HostToken.Reveal(), c.Value} {
		if strings.Contains(page, s) {
			t.Error("the dashboard shows a secret")
		}
	}
	if filtered := get(&http.Cookie{Name: c.Name, Value: c.Value}); !strings.Contains(filtered, "1 hosts") {
		t.Errorf("summary missing")
	}
	// Logout needs the page's CSRF token.
	req, _ := http.NewRequest("POST", f.http.URL+dashboard.Path+"/logout", strings.NewReader("csrf=forged"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(c)
	lresp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = lresp.Body.Close()
	if lresp.StatusCode != 403 {
		t.Errorf("logout with a forged CSRF token: %d, want 403", lresp.StatusCode)
	}
	if strings.Contains(f.logBuf.String(), adminToken) {
		t.Error("the log holds the admin token")
	}
	// Guessing is throttled: after ten failures even the right token waits.
	codes := map[int]int{}
	for range 12 {
		codes[login("guess", "").StatusCode]++
	}
	if codes[401] != 9 || codes[429] != 3 {
		t.Errorf("failed logins answered %v, want nine more 401s then 429s", codes)
	}
	if resp := login(adminToken, ""); resp.StatusCode != 429 {
		t.Errorf("login while throttled: %d, want 429", resp.StatusCode)
	}
	f.clock.Add(2 * time.Minute)
	if resp := login(adminToken, ""); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("login after the throttle: %d, want 303", resp.StatusCode)
	}
}

func TestDerivedEvents(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.declare("i-ev")
	reg, err := f.registerIMDS("i-ev", "boot", secret.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	h := &rolloutHost{reg: reg, rep: runs(imgA, api.UnitReady)}
	f.beat(h) // the baseline
	h.rep.Tunnel.ReadyConnections = 0
	h.rep.Units[0].State = api.UnitFailed
	f.beat(h)
	f.srv.sweepTunnels()
	f.srv.lv.advance(ctx)
	f.clock.Add(3 * time.Minute) // past the default 2-minute tunnel window
	f.srv.sweepTunnels()
	f.srv.lv.advance(ctx)
	if err := f.srv.flush(ctx, f.srv.store.Flush); err != nil {
		t.Fatal(err)
	}
	var p events.Page
	f.adminDo("GET", "/v1/events?since=0", nil, &p)
	got := map[string]int{}
	for _, e := range p.Events {
		if e.HostID == reg.HostID {
			got[e.Kind]++
		}
	}
	if got[events.KindTunnelNotReady] != 1 || got[events.KindUnitFailed] != 1 {
		t.Errorf("events of the host = %v, want one tunnel_not_ready and one unit_failed", got)
	}
}

// TestSetChannelIsARollout: PUT /v1/admin/channels/{name} goes through a
// rollout like every other change of desired images: completed at once,
// served to every host, and rolled back like any other.
func TestSetChannelIsARollout(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.declare("i-0")
	reg, err := f.registerIMDS("i-0", "boot", secret.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	h := &rolloutHost{reg: reg, rep: runs(imgA, api.UnitReady)}
	for i, img := range []string{imgA, imgB} {
		if err := f.admin.SetChannelImages(ctx, "stable", map[string]string{"platform": img}); err != nil {
			t.Fatal(err)
		}
		var ro rollout.Rollout
		if code := f.adminDo("GET", "/v1/admin/channels/stable/rollout", nil, &ro); code != 200 || ro.State != rollout.StateCompleted || ro.To["platform"] != img {
			t.Fatalf("set %d: rollout %d %+v, want completed with platform=%s", i, code, ro, img)
		}
		if got := f.beat(h); got.Images["platform"] != img || got.Revision != ro.Revision {
			t.Fatalf("set %d: host given %+v, want %s at revision %d", i, got, img, ro.Revision)
		}
	}
	var ro rollout.Rollout
	if code := f.adminDo("POST", "/v1/admin/channels/stable/rollout/rollback", api.RolloutAction{Reason: "bad"}, &ro); code != 200 {
		t.Fatalf("rollback: %d", code)
	}
	if got := f.beat(h); got.Images["platform"] != imgA || got.Revision != ro.RollbackRevision {
		t.Fatalf("after rollback the host is given %+v, want %s at revision %d", got, imgA, ro.RollbackRevision)
	}
}
