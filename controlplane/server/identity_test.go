package server

import (
	"context"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
	"github.com/molecule-ai/molecule-agent/controlplane/store/pgtest"
)

// backends runs fn against a fresh SQLite database and a fresh database of
// a throwaway PostgreSQL cluster.
func backends(t *testing.T, fn func(t *testing.T, dsn string)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, "sqlite://"+filepath.Join(t.TempDir(), "cp.db")) })
	t.Run("postgres", func(t *testing.T) {
		c := pgtest.Start(t)
		dsn, err := c.NewDatabase(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		fn(t, dsn)
	})
}

type cpUnderTest struct {
	clock *clock
	st    store.Store
	srv   *Server
	admin *api.Client
	agent *api.Client
}

func startCP(t *testing.T, dsn string) *cpUnderTest {
	t.Helper()
	st, err := store.Open(context.Background(), dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Now()}
	srv, err := New(context.Background(), Config{Store: st, AdminToken: secret.New(adminToken), Interval: time.Second,
		FlushWindow: time.Second, HostRate: 100, HostBurst: 100, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	c := &cpUnderTest{clock: clk, st: st, srv: srv}
	c.admin, _ = api.New(api.Options{BaseURL: hs.URL, AdminToken: secret.New(adminToken), RetryMax: -1})
	c.agent, _ = api.New(api.Options{BaseURL: hs.URL, RetryMax: -1})
	t.Cleanup(func() {
		hs.Close()
		srv.lv.close()
		_ = st.Close()
	})
	return c
}

func (c *cpUnderTest) token(t *testing.T, req api.EnrollmentTokenRequest) secret.Secret {
	t.Helper()
	r, err := c.admin.CreateEnrollmentToken(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return secret.New(r.Token)
}

func (c *cpUnderTest) enroll(tok secret.Secret, machine, boot string, current secret.Secret) (api.Registration, error) {
	return c.agent.Register(context.Background(), api.Proof{EnrollmentToken: tok, MachineID: machine}, current,
		api.RegisterRequest{AgentVersion: "1.0.0", BootID: boot})
}

// TestEnrollmentCannotTakeOverAHost is issue 15's finding 1: an enrollment
// token of another org (or role), presenting an enrolled host's machine_id
// and boot_id but not its host token, is refused with 403 and an audit
// event; the host keeps its token. Finding 4: enrollment tokens are single
// use unless the operator asks for more, and can be bound to one machine.
func TestEnrollmentCannotTakeOverAHost(t *testing.T) {
	backends(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		c := startCP(t, dsn)
		acme := c.token(t, api.EnrollmentTokenRequest{Org: "acme", Role: "tenant", Uses: 3})
		victim, err := c.enroll(acme, "m-victim", "boot-1", secret.Secret{})
		if err != nil {
			t.Fatal(err)
		}
		_, events0 := countRows(t, c.st)
		attacks := []struct {
			name      string
			tok       secret.Secret
			current   secret.Secret
			wantCode  int
			wantField string
		}{
			{"another org's token", c.token(t, api.EnrollmentTokenRequest{Org: "globex", Role: "tenant", Uses: 5}), secret.Secret{}, 403, "org"},
			{"another org's token and a made-up host token", c.token(t, api.EnrollmentTokenRequest{Org: "globex", Role: "tenant"}), secret.New("mht_guess"), 403, "org"},
			{"the same org's token for another role", c.token(t, api.EnrollmentTokenRequest{Org: "acme", Role: "workspace", Workspace: "ws-1"}), secret.Secret{}, 403, "org"},
			{"another token of the same org and role", c.token(t, api.EnrollmentTokenRequest{Org: "acme", Role: "tenant"}), secret.Secret{}, 409, "host_token"},
		}
		for i, a := range attacks {
			_, err := c.enroll(a.tok, "m-victim", "boot-1", a.current)
			if !isCode(err, a.wantCode) || fieldOf(err) != a.wantField {
				t.Errorf("%s: err = %v (field %q), want %d on %q", a.name, err, fieldOf(err), a.wantCode, a.wantField)
			}
			if _, err := c.agent.Heartbeat(ctx, victim.HostID, victim.HostToken, api.HeartbeatRequest{BootID: "boot-1"}); err != nil {
				t.Fatalf("%s: the victim's token no longer heartbeats: %v", a.name, err)
			}
			h, err := c.st.GetHost(ctx, victim.HostID)
			if err != nil || h.Org != "acme" || h.Role != "tenant" || h.TokenHash != store.HashToken(victim.HostToken.Reveal()) {
				t.Fatalf("%s: the victim's host changed: %+v, %v", a.name, h, err)
			}
			// Nothing but audit events, one per refusal (repeats coalesce).
			hosts, events := countRows(t, c.st)
			evs, _ := c.st.Events(ctx, "", 1000)
			audits := int64(0)
			for _, e := range evs {
				if e.Type == store.EventRegisterRefused && e.HostID == victim.HostID {
					audits += e.Count
				}
			}
			if hosts != 1 || events > events0+i+1 || audits != int64(i+1) {
				t.Errorf("%s: hosts %d, events %d->%d, refusals audited %d; want 1 host and %d audited", a.name, hosts, events0, events, audits, i+1)
			}
		}

		// The host itself: a lost reply retried (same token, machine and boot)
		// gets its host back; a reboot with its host token too, even once the
		// token's uses are spent.
		retry, err := c.enroll(acme, "m-victim", "boot-1", secret.Secret{})
		if err != nil || retry.HostID != victim.HostID {
			t.Fatalf("retried registration = %v, %v; want host %s", retry.HostID, err, victim.HostID)
		}
		for _, m := range []string{"m-2", "m-3"} {
			if _, err := c.enroll(acme, m, "boot-1", secret.Secret{}); err != nil {
				t.Fatalf("use of a 3-use token by %s: %v", m, err)
			}
		}
		if _, err := c.enroll(acme, "m-4", "boot-1", secret.Secret{}); !isCode(err, 403) || fieldOf(err) != "enrollment_token" {
			t.Errorf("4th use of a 3-use token err = %v, want 403 on enrollment_token", err)
		}
		reboot, err := c.enroll(acme, "m-victim", "boot-2", retry.HostToken)
		if err != nil || reboot.HostID != victim.HostID {
			t.Fatalf("reboot with the host token = %v, %v", reboot.HostID, err)
		}
		if _, err := c.enroll(acme, "m-victim", "boot-3", retry.HostToken); !isCode(err, 409) {
			t.Errorf("reboot with the rotated-out host token err = %v, want 409", err)
		}

		// Single use by default; bound to a declared machine on request.
		once := c.token(t, api.EnrollmentTokenRequest{Org: "acme", Role: "workspace", Workspace: "ws-1"})
		if _, err := c.enroll(once, "m-5", "boot-1", secret.Secret{}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.enroll(once, "m-6", "boot-1", secret.Secret{}); !isCode(err, 403) {
			t.Errorf("second use of a default token err = %v, want 403", err)
		}
		bound := c.token(t, api.EnrollmentTokenRequest{Org: "acme", Role: "workspace", Workspace: "ws-1", MachineID: "m-7"})
		if _, err := c.enroll(bound, "m-8", "boot-1", secret.Secret{}); !isCode(err, 403) || fieldOf(err) != "machine_id" {
			t.Errorf("machine-bound token from another machine err = %v, want 403 on machine_id", err)
		}
		if _, err := c.enroll(bound, "m-7", "boot-1", secret.Secret{}); err != nil {
			t.Errorf("machine-bound token from its machine: %v", err)
		}
		for _, bad := range []api.EnrollmentTokenRequest{
			{Org: "acme", Role: "tenant", Uses: -1}, {Org: "acme", Role: "tenant", Uses: api.MaxEnrollmentUses + 1},
			{Org: "acme", Role: "tenant", MachineID: "m\n1"},
		} {
			if _, err := c.admin.CreateEnrollmentToken(ctx, bad); !isCode(err, 400) {
				t.Errorf("CreateEnrollmentToken(%+v) err = %v, want 400", bad, err)
			}
		}
	})
}

func countRows(t *testing.T, st store.Store) (hosts, events int) {
	t.Helper()
	hs, err := st.ListHosts(context.Background(), store.HostFilter{})
	if err != nil {
		t.Fatal(err)
	}
	evs, err := st.Events(context.Background(), "", 10000)
	if err != nil {
		t.Fatal(err)
	}
	return len(hs), len(evs)
}

func fieldOf(err error) string {
	var se *api.StatusError
	if errors.As(err, &se) {
		return se.Field
	}
	return ""
}

// enrollTenant registers the tenant host of an org of its own: the host
// that runs, and reports, the org's tunnel.
func (f *fixture) enrollTenant(machine string) api.Registration {
	f.t.Helper()
	tok, err := f.admin.CreateEnrollmentToken(context.Background(), api.EnrollmentTokenRequest{Org: "org-" + machine, Role: api.RoleTenant})
	if err != nil {
		f.t.Fatal(err)
	}
	r, err := f.agent.Register(context.Background(), api.Proof{EnrollmentToken: secret.New(tok.Token), MachineID: machine},
		secret.Secret{}, api.RegisterRequest{AgentVersion: "1.0.0", BootID: "boot-" + machine})
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}
