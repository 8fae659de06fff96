package server

import (
	"context"
	"strings"
	"testing"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

// TestTunnelIDIsTheOrgs is issue 15's finding 5: a heartbeat reports a
// tunnel ID but never changes the one recorded for the org (the first one
// reported, or the provisioned one); a mismatch is an event, and a
// deprovision hands out only the org's recorded tunnel, so one tenant's
// host cannot make the operator delete another tenant's tunnel.
func TestTunnelIDIsTheOrgs(t *testing.T) {
	backends(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		c := startCP(t, dsn)
		host := func(org, machine string) api.Registration {
			t.Helper()
			role := api.RoleTenant
			if strings.HasPrefix(machine, "ws-") {
				role = api.RoleWorkspace
			}
			r, err := c.enroll(c.token(t, api.EnrollmentTokenRequest{Org: org, Role: role}), machine, "boot-1", secret.Secret{})
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		report := func(r api.Registration, tunnel string) {
			t.Helper()
			if _, err := c.agent.Heartbeat(ctx, r.HostID, r.HostToken, api.HeartbeatRequest{BootID: "boot-1",
				Tunnel: &api.TunnelStatus{ID: tunnel, ReadyConnections: 1}}); err != nil {
				t.Fatal(err)
			}
			if err := c.srv.flush(ctx, c.srv.store.Flush); err != nil {
				t.Fatal(err)
			}
		}
		mismatches := func(hostID string) int {
			t.Helper()
			evs, err := c.st.Events(ctx, hostID, 100)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, e := range evs {
				if e.Type == store.EventTunnelMismatch {
					n++
				}
			}
			return n
		}
		acme, acme2, globex, initech := host("acme", "m-acme"), host("acme", "m-acme-2"), host("globex", "m-globex"), host("initech", "m-initech")
		report(acme, "tun-acme")    // the first report binds acme's tunnel
		report(globex, "tun-acme")  // another org's tunnel: ignored, an event
		report(acme2, "tun-forged") // not acme's tunnel: ignored, an event
		ws := host("acme", "ws-acme")
		report(ws, "tun-acme") // only the tenant host runs the org's tunnel
		solo := host("solo", "ws-solo")
		report(solo, "tun-solo") // an org of workspace hosts only (development) binds it
		if err := c.admin.BindOrgTunnel(ctx, api.OrgTunnel{Org: "initech", TunnelID: "tun-initech"}); err != nil {
			t.Fatal(err)
		}
		if err := c.admin.BindOrgTunnel(ctx, api.OrgTunnel{Org: "globex", TunnelID: "tun-acme"}); !isCode(err, 409) {
			t.Errorf("binding acme's tunnel to globex err = %v, want 409", err)
		}
		report(initech, "tun-other") // not the provisioned one
		for _, tt := range []struct {
			h          api.Registration
			mismatches int
			handedOut  string
		}{
			{globex, 1, ""}, {acme2, 1, ""}, {initech, 1, ""}, {ws, 1, ""}, {acme, 0, "tun-acme"}, {solo, 0, "tun-solo"},
		} {
			if got := mismatches(tt.h.HostID); got != tt.mismatches {
				t.Errorf("host %s: %d tunnel_mismatch events, want %d", tt.h.HostID, got, tt.mismatches)
			}
			d, err := c.admin.Deprovision(ctx, tt.h.HostID)
			if err != nil || d.TunnelID != tt.handedOut {
				t.Errorf("deprovision of host %s = %+v, %v; want tunnel %q", tt.h.HostID, d, err, tt.handedOut)
			}
		}
		if id, err := c.st.OrgTunnel(ctx, "initech"); err != nil || id != "tun-initech" {
			t.Errorf("initech's tunnel = %q, %v; want the provisioned tun-initech", id, err)
		}
		// Deprovisioning acme's tenant released its tunnel: acme's next host
		// binds a new one.
		next := host("acme", "m-acme-3")
		report(next, "tun-acme-new")
		if id, err := c.st.OrgTunnel(ctx, "acme"); err != nil || id != "tun-acme-new" {
			t.Errorf("acme's tunnel after its tenant was replaced = %q, %v; want tun-acme-new", id, err)
		}
	})
}
