package provision_test

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/molecule-ai/molecule-agent/agent/tunnel"
	"github.com/molecule-ai/molecule-agent/controlplane/provision"
	"github.com/molecule-ai/molecule-agent/controlplane/provision/cftest"
)

func TestTunnelToken(t *testing.T) {
	t.Parallel()
	raw := []byte("0123456789abcdef0123456789abcdef")
	tok := provision.TunnelToken("acct", "6ff42ae2-765d-4adf-8112-31c55c1551ef", raw)
	got, err := tunnel.ParseToken(tok.Reveal())
	if err != nil || got.AccountTag != "acct" || got.TunnelID != "6ff42ae2-765d-4adf-8112-31c55c1551ef" ||
		got.Secret.Reveal() != "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" {
		t.Errorf("ParseToken(TunnelToken) = %+v, %v", got, err)
	}
	if fmt.Sprint(tok) != "[redacted]" {
		t.Errorf("a token prints as %q", fmt.Sprint(tok))
	}
}

func TestTenantTunnelEndToEnd(t *testing.T) {
	t.Parallel()
	s := cftest.New(t)
	log, logs := newLog()
	c := cloudflare(t, s, log)
	ctx := t.Context()
	host := c.Hostname("acme")

	tun, err := c.EnsureTunnel(ctx, "molecule-acme")
	if err != nil || !tun.Created {
		t.Fatalf("EnsureTunnel = %+v, %v; want created", tun, err)
	}
	if _, err := tunnel.ParseToken(tun.Token.Reveal()); err != nil {
		t.Errorf("derived token: %v", err)
	}
	again, err := c.EnsureTunnel(ctx, "molecule-acme")
	if err != nil || again.Created || again.ID != tun.ID || !again.Token.Equal(tun.Token) {
		t.Errorf("EnsureTunnel again = %+v (same token %v), %v; want the same tunnel and token, not created", again, again.Token.Equal(tun.Token), err)
	}
	for range 2 {
		if err := c.ConfigureIngress(ctx, tun.ID, host); err != nil {
			t.Fatal(err)
		}
	}
	live := s.LiveTunnels()
	if len(live) != 1 || len(live[0].Ingress) != 2 || live[0].Ingress[0] != (cftest.IngressRule{Hostname: "acme.molecule.test", Service: "http://localhost:8080"}) ||
		live[0].Ingress[1] != (cftest.IngressRule{Service: "http_status:404"}) {
		t.Errorf("tunnels = %+v, want one routing acme.molecule.test to :8080 with a 404 catch-all", live)
	}
	for range 2 {
		if _, err := c.UpsertCNAME(ctx, host, tun.ID); err != nil {
			t.Fatal(err)
		}
	}
	recs := s.Records()
	if len(recs) != 1 || recs[0].Type != "CNAME" || recs[0].Name != host || recs[0].Content != tun.ID+".cfargotunnel.com" || !recs[0].Proxied {
		t.Errorf("records = %+v, want one proxied CNAME to the tunnel", recs)
	}

	if _, err := c.EnsureTunnel(ctx, "other-tunnel"); err != nil {
		t.Fatal(err)
	}
	ours, err := c.Tunnels(ctx, "molecule-")
	if err != nil || len(ours) != 1 || ours[0].ID != tun.ID || ours[0].Status != "inactive" {
		t.Errorf("Tunnels(molecule-) = %+v, %v; want the tenant's tunnel alone", ours, err)
	}

	s.Connect(tun.ID, 4)
	st, err := c.Status(ctx, tun.ID)
	if err != nil || st.Status != "healthy" || st.Connections != 4 {
		t.Errorf("status = %+v, %v; want healthy with 4 connections", st, err)
	}

	// The delete cascade's Cloudflare steps, twice (a resumed cascade).
	for range 2 {
		if err := c.DeleteCNAME(ctx, host); err != nil {
			t.Fatal(err)
		}
		if err := c.DeleteTunnel(ctx, tun.ID); err != nil {
			t.Fatal(err)
		}
	}
	if len(s.Records()) != 0 || len(s.LiveTunnels()) != 1 {
		t.Errorf("left: records %+v, tunnels %+v; want only the other tunnel", s.Records(), s.LiveTunnels())
	}
	if st, err := c.Status(ctx, tun.ID); err != nil || !st.Deleted {
		t.Errorf("status after delete = %+v, %v; want deleted", st, err)
	}
	for _, x := range s.Tunnels() {
		noSecrets(t, "the log", logs.String(), base64.StdEncoding.EncodeToString(x.Secret))
	}
	noSecrets(t, "the log", logs.String(), tun.Token.Reveal())
}

func TestCloudflareFaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		op   string
		f    []cftest.Fault
	}{
		{name: "list rate limited", op: cftest.OpListTunnels, f: []cftest.Fault{cftest.RateLimited, cftest.RateLimited}},
		{name: "create answer lost", op: cftest.OpCreateTunnel, f: []cftest.Fault{cftest.LostAnswer}},
		{name: "create 5xx", op: cftest.OpCreateTunnel, f: []cftest.Fault{cftest.ServerError}},
		{name: "token 502", op: cftest.OpGetToken, f: []cftest.Fault{cftest.BadGateway}},
		{name: "config 5xx", op: cftest.OpPutConfig, f: []cftest.Fault{cftest.ServerError, cftest.RateLimited}},
		{name: "record answer lost", op: cftest.OpCreateRecord, f: []cftest.Fault{cftest.LostAnswer}},
		{name: "record list rate limited", op: cftest.OpListRecords, f: []cftest.Fault{cftest.RateLimited}},
		{name: "cleanup 5xx", op: cftest.OpDeleteConnections, f: []cftest.Fault{cftest.ServerError}},
		{name: "delete answer lost", op: cftest.OpDeleteTunnel, f: []cftest.Fault{cftest.LostAnswer}},
		{name: "record delete lost", op: cftest.OpDeleteRecord, f: []cftest.Fault{cftest.LostAnswer}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := cftest.New(t)
			c := cloudflare(t, s, nil)
			ctx := t.Context()
			s.Fail(tt.op, tt.f...)
			// Each step must succeed in one call, faults and all; the
			// delete steps are then run twice, as a resumed cascade would.
			var tun provision.Tunnel
			steps := []func() error{
				func() (err error) { tun, err = c.EnsureTunnel(ctx, "molecule-acme"); return err },
				func() error { return c.ConfigureIngress(ctx, tun.ID, c.Hostname("acme")) },
				func() error { _, err := c.UpsertCNAME(ctx, c.Hostname("acme"), tun.ID); return err },
			}
			for i, step := range steps {
				if err := step(); err != nil {
					t.Fatalf("step %d: %v", i+1, err)
				}
			}
			if len(s.LiveTunnels()) != 1 || len(s.Records()) != 1 {
				t.Fatalf("after provisioning: %d tunnels, %d records; want one of each", len(s.LiveTunnels()), len(s.Records()))
			}
			if tok, err := tunnel.ParseToken(tun.Token.Reveal()); err != nil || tok.TunnelID != s.LiveTunnels()[0].ID {
				t.Errorf("token for %s: %v, want the live tunnel's", tok.TunnelID, err)
			}
			s.Connect(tun.ID, 2)
			for i, step := range []func() error{
				func() error { return c.DeleteCNAME(ctx, c.Hostname("acme")) },
				func() error { return c.DeleteTunnel(ctx, tun.ID) },
			} {
				for range 2 {
					if err := step(); err != nil {
						t.Fatalf("delete step %d: %v", i+1, err)
					}
				}
			}
			if len(s.LiveTunnels()) != 0 || len(s.Records()) != 0 {
				t.Errorf("after deleting: %d tunnels, %d records; want none", len(s.LiveTunnels()), len(s.Records()))
			}
		})
	}
}

func TestCloudflareDenied(t *testing.T) {
	t.Parallel()
	s := cftest.New(t)
	c := cloudflare(t, s, nil)
	s.Fail(cftest.OpCreateTunnel, cftest.Forbidden)
	_, err := c.EnsureTunnel(t.Context(), "molecule-acme")
	if !errors.Is(err, provision.ErrDenied) || !strings.Contains(err.Error(), "Cloudflare Tunnel: Edit") {
		t.Errorf("error = %v, want ErrDenied naming the token permission", err)
	}
	s.Fail(cftest.OpListRecords, cftest.Forbidden)
	_, err = c.UpsertCNAME(t.Context(), c.Hostname("acme"), "6ff42ae2-765d-4adf-8112-31c55c1551ef")
	if !errors.Is(err, provision.ErrDenied) || !strings.Contains(err.Error(), "DNS: Edit") {
		t.Errorf("error = %v, want ErrDenied naming DNS: Edit", err)
	}
	if s.Count(cftest.OpCreateTunnel, 403) != 1 {
		t.Error("a refusal was retried")
	}
}
