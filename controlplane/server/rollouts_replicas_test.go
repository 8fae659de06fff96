package server

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
	"github.com/molecule-ai/molecule-agent/controlplane/rollout"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
	"github.com/molecule-ai/molecule-agent/controlplane/store/pgtest"
)

// TestRolloutAcrossReplicas runs two replicas with shared liveness on one
// PostgreSQL. The rollout is started on one replica, its hosts heartbeat to
// either, each obeying the desired state it is served; the sweeper-lock
// holder advances the rollout from every replica's flushed reports, and
// both replicas serve the same desired state.
func TestRolloutAcrossReplicas(t *testing.T) {
	pg := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Long)
	defer cancel()
	dsn, err := pg.NewDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type replica struct {
		srv   *Server
		http  *httptest.Server
		agent *api.Client
	}
	var reps []*replica
	for range 2 {
		st, err := store.Open(ctx, dsn, nil)
		if err != nil {
			t.Fatal(err)
		}
		srv, err := New(ctx, Config{Store: st, AdminToken: secret.New(adminToken), Interval: 500 * time.Millisecond,
			FlushWindow: 200 * time.Millisecond, HostRate: 100, HostBurst: 100,
			Rollouts: RolloutsConfig{Tick: 50 * time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(srv.Handler())
		rctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- srv.Run(rctx) }()
		t.Cleanup(func() {
			hs.Close()
			stop()
			<-done
			_ = st.Close()
		})
		agent, _ := api.New(api.Options{BaseURL: hs.URL, HTTPClient: hs.Client(), RetryMax: -1})
		reps = append(reps, &replica{srv: srv, http: hs, agent: agent})
	}
	admin, _ := api.New(api.Options{BaseURL: reps[0].http.URL, AdminToken: secret.New(adminToken), HTTPClient: reps[0].http.Client()})
	if err := admin.SetChannelImages(ctx, "stable", map[string]string{"platform": imgA}); err != nil {
		t.Fatal(err)
	}
	type host struct {
		reg api.Registration
		rep *replica
		img string
	}
	var hosts []*host
	for i := range 4 {
		tok, err := admin.CreateEnrollmentToken(ctx, api.EnrollmentTokenRequest{Org: "acme", Role: api.RoleTenant, Channel: "stable"})
		if err != nil {
			t.Fatal(err)
		}
		rep := reps[i%2]
		reg, err := rep.agent.Register(ctx, api.Proof{EnrollmentToken: secret.New(tok.Token), MachineID: fmt.Sprintf("m-%d", i)},
			secret.Secret{}, api.RegisterRequest{AgentVersion: "1", BootID: "b"})
		if err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, &host{reg: reg, rep: rep, img: imgA})
	}
	// beatAll: every host reports running what it was last told, and
	// takes the new desired image (an agent applying it at once).
	beatAll := func() {
		for _, h := range hosts {
			resp, err := h.rep.agent.Heartbeat(ctx, h.reg.HostID, h.reg.HostToken, runs(h.img, api.UnitReady))
			if err != nil {
				t.Fatalf("heartbeat: %v", err)
			}
			if img := resp.Desired.Images["platform"]; img != "" {
				h.img = img
			}
		}
	}
	beatAll()
	var ro rollout.Rollout
	fx := &fixture{t: t, http: reps[1].http}
	if code := fx.adminDo("POST", "/v1/admin/channels/stable/rollouts", rollout.Request{Images: map[string]string{"platform": imgB},
		RolloutPolicy: rollout.Policy{Canary: 1, BatchPercent: 50, BakeMS: 100, WaveTimeoutMS: 30000}}, &ro); code != 201 {
		t.Fatalf("start rollout on replica 1: %d", code)
	}
	n := 0
	for _, w := range ro.Waves {
		n += len(w.Hosts)
	}
	if len(ro.Waves) != 3 || n != 4 {
		t.Fatalf("waves %+v: want a canary and two batches over all four hosts", ro.Waves)
	}
	deadline := time.Now().Add(testenv.Long)
	for {
		beatAll()
		r0, _ := reps[0].srv.rollouts.Get("stable")
		r1, _ := reps[1].srv.rollouts.Get("stable")
		if r0.State == rollout.StateCompleted && r1.State == rollout.StateCompleted {
			break
		}
		if r0.State == rollout.StateHalted || time.Now().After(deadline) {
			t.Fatalf("rollout on replicas: %s (%s) / %s, want completed", r0.State, r0.Reason, r1.State)
		}
		time.Sleep(50 * time.Millisecond) // the hosts' heartbeat interval
	}
	var on []string
	for _, h := range hosts {
		if h.img != imgB {
			on = append(on, h.reg.HostID+"="+h.img)
		}
	}
	if len(on) > 0 {
		t.Errorf("hosts not told the new image: %s", strings.Join(on, ", "))
	}
}
