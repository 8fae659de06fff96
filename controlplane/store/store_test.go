package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
	"github.com/molecule-ai/molecule-agent/controlplane/store/pgtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// backends runs the suite against SQLite and PostgreSQL; each case gets a
// fresh database from open.
func TestStore(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		suite(t, func(t *testing.T) string {
			return "sqlite://" + filepath.Join(t.TempDir(), "cp.db")
		})
	})
	t.Run("postgres", func(t *testing.T) {
		c := pgtest.Start(t)
		suite(t, func(t *testing.T) string {
			dsn, err := c.NewDatabase(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			return dsn
		})
	})
}

func openDSN(t *testing.T, dsn string) store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), dsn, nil)
	if err != nil {
		t.Fatalf("open %s: %v", dsn, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

var t0 = time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)

func reg(key, boot, tok, presented string) store.Registration {
	return store.Registration{InstanceKey: key, NewHostID: "h-" + key + "-" + boot, Org: "acme", Role: "tenant",
		Channel: "stable", BootID: boot, AgentVersion: "1.0", NewTokenHash: store.HashToken(tok),
		PresentedTokenHash: presented, Attested: true, Now: t0}
}

func suite(t *testing.T, newDSN func(t *testing.T) string) {
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Long)
	t.Cleanup(cancel)

	t.Run("migrations run twice", func(t *testing.T) {
		dsn := newDSN(t)
		s1 := openDSN(t, dsn)
		if err := s1.PutDeclaration(ctx, store.Declaration{InstanceID: "i-1", Org: "acme", Role: "tenant", CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
		_ = s1.Close()
		s2 := openDSN(t, dsn)
		if _, err := s2.GetDeclaration(ctx, "i-1"); err != nil {
			t.Errorf("declaration lost across reopen: %v", err)
		}
	})

	t.Run("declarations", func(t *testing.T) {
		s := openDSN(t, newDSN(t))
		if _, err := s.GetDeclaration(ctx, "i-missing"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("missing declaration err = %v, want ErrNotFound", err)
		}
		d := store.Declaration{InstanceID: "i-1", Org: "acme", Role: "tenant", Workspace: "ws", Channel: "stable", CreatedAt: t0}
		if err := s.PutDeclaration(ctx, d); err != nil {
			t.Fatal(err)
		}
		d.Channel = "staging"
		if err := s.PutDeclaration(ctx, d); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetDeclaration(ctx, "i-1")
		if err != nil || got != d {
			t.Errorf("GetDeclaration = %+v, %v; want %+v", got, err, d)
		}
	})

	t.Run("enrollment tokens", func(t *testing.T) {
		s := openDSN(t, newDSN(t))
		tok := store.EnrollmentToken{ID: "e1", Hash: store.HashToken("secret"), Org: "acme", Role: "workspace", ExpiresAt: t0.Add(time.Hour), CreatedAt: t0}
		if err := s.CreateEnrollmentToken(ctx, tok); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateEnrollmentToken(ctx, store.EnrollmentToken{ID: "e2", Hash: tok.Hash, ExpiresAt: t0, CreatedAt: t0}); err == nil {
			t.Error("second token with the same hash accepted")
		}
		got, err := s.EnrollmentTokenByHash(ctx, store.HashToken("secret"))
		if err != nil || got != tok {
			t.Errorf("EnrollmentTokenByHash = %+v, %v; want %+v", got, err, tok)
		}
		if _, err := s.EnrollmentTokenByHash(ctx, store.HashToken("other")); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("wrong token err = %v, want ErrNotFound", err)
		}
	})

	t.Run("register", func(t *testing.T) {
		s := openDSN(t, newDSN(t))
		h, created, err := s.Register(ctx, reg("ec2:i-1", "boot1", "tok1", ""))
		if err != nil || !created || h.Status != store.StatusOnline {
			t.Fatalf("first register = %+v, %v, %v; want created online", h, created, err)
		}
		// Same boot again (a retried request): same host, rotated token.
		h2, created, err := s.Register(ctx, reg("ec2:i-1", "boot1", "tok2", ""))
		if err != nil || created || h2.ID != h.ID || h2.TokenHash != store.HashToken("tok2") {
			t.Fatalf("same-boot register = %+v, %v, %v; want same host with rotated token", h2, created, err)
		}
		// A second boot without the current token is refused and changes nothing.
		if _, _, err := s.Register(ctx, reg("ec2:i-1", "boot2", "tok3", store.HashToken("tok1"))); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("second boot with a stale token err = %v, want ErrConflict", err)
		}
		if got, _ := s.GetHost(ctx, h.ID); got.BootID != "boot1" || got.TokenHash != store.HashToken("tok2") {
			t.Errorf("refused register changed the host: boot %q", got.BootID)
		}
		// A second boot presenting the current token is accepted.
		h3, _, err := s.Register(ctx, reg("ec2:i-1", "boot2", "tok4", store.HashToken("tok2")))
		if err != nil || h3.ID != h.ID || h3.BootID != "boot2" {
			t.Fatalf("second boot with current token = %+v, %v", h3, err)
		}
		if _, err := s.Deprovision(ctx, h.ID, "", t0); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Register(ctx, reg("ec2:i-1", "boot2", "tok5", store.HashToken("tok4"))); !errors.Is(err, store.ErrRemoved) {
			t.Errorf("register of a removed host err = %v, want ErrRemoved", err)
		}
		evs, err := s.Events(ctx, h.ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		var types []string
		for _, e := range evs {
			types = append(types, e.Type)
		}
		if want := []string{"registered", "registered", "register_refused", "registered", "removed"}; !equal(types, want) {
			t.Errorf("events = %v, want %v", types, want)
		}
	})

	t.Run("flush is one transaction and spares removed hosts", func(t *testing.T) {
		s := openDSN(t, newDSN(t))
		var ids []string
		for _, k := range []string{"a", "b", "c"} {
			h, _, err := s.Register(ctx, reg(k, "boot", "tok-"+k, ""))
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, h.ID)
		}
		if _, err := s.Deprovision(ctx, ids[2], "", t0); err != nil {
			t.Fatal(err)
		}
		before := s.Stats().WriteTx
		t1 := t0.Add(10 * time.Second)
		err := s.Flush(ctx, []store.LiveUpdate{
			{HostID: ids[0], LastSeen: t1, Report: `{"units":[]}`, TunnelID: "tun-a", AgentVersion: "1.1"},
			{HostID: ids[1], LastSeen: t1, Status: store.StatusOffline},
			{HostID: ids[2], LastSeen: t1, Status: store.StatusOnline},
		}, []store.Event{{HostID: ids[1], Type: "offline", At: t1}})
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Stats().WriteTx - before; got != 1 {
			t.Errorf("flush used %d write transactions, want 1", got)
		}
		a, _ := s.GetHost(ctx, ids[0])
		if !a.LastSeen.Equal(t1) || a.TunnelID != "tun-a" || a.AgentVersion != "1.1" || a.Report != `{"units":[]}` {
			t.Errorf("host a after flush = %+v", a)
		}
		b, _ := s.GetHost(ctx, ids[1])
		if b.Status != store.StatusOffline {
			t.Errorf("host b status = %q, want offline", b.Status)
		}
		c, _ := s.GetHost(ctx, ids[2])
		if c.Status != store.StatusRemoved || !c.LastSeen.Equal(t0) {
			t.Errorf("removed host changed by flush: %+v", c)
		}
		// An older last_seen never moves time backwards.
		if err := s.Flush(ctx, []store.LiveUpdate{{HostID: ids[0], LastSeen: t0}}, nil); err != nil {
			t.Fatal(err)
		}
		if a, _ := s.GetHost(ctx, ids[0]); !a.LastSeen.Equal(t1) {
			t.Errorf("last_seen went back to %s", a.LastSeen)
		}
		if err := s.Flush(ctx, nil, nil); err != nil || s.Stats().WriteTx-before != 2 {
			t.Errorf("empty flush: err %v, transactions %d, want none", err, s.Stats().WriteTx-before-2)
		}
	})

	t.Run("list hosts with filters", func(t *testing.T) {
		s := openDSN(t, newDSN(t))
		r1 := reg("x", "boot", "t1", "")
		r2 := reg("y", "boot", "t2", "")
		r2.Org, r2.Role = "globex", "workspace"
		for _, r := range []store.Registration{r1, r2} {
			if _, _, err := s.Register(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		tests := []struct {
			f    store.HostFilter
			want int
		}{
			{store.HostFilter{}, 2},
			{store.HostFilter{Org: "acme"}, 1},
			{store.HostFilter{Org: "globex", Role: "workspace"}, 1},
			{store.HostFilter{Org: "globex", Role: "tenant"}, 0},
			{store.HostFilter{Status: "online", Channel: "stable"}, 2},
		}
		for _, tt := range tests {
			got, err := s.ListHosts(ctx, tt.f)
			if err != nil || len(got) != tt.want {
				t.Errorf("ListHosts(%+v) = %d hosts, %v; want %d", tt.f, len(got), err, tt.want)
			}
		}
	})

	t.Run("deprovision", func(t *testing.T) {
		s := openDSN(t, newDSN(t))
		if _, err := s.Deprovision(ctx, "nope", "", t0); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("deprovision unknown err = %v, want ErrNotFound", err)
		}
		h, _, _ := s.Register(ctx, reg("z", "boot", "t", ""))
		if err := s.Flush(ctx, []store.LiveUpdate{{HostID: h.ID, LastSeen: t0, Report: "{}", TunnelID: "tun-z"}}, nil); err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			got, err := s.Deprovision(ctx, h.ID, "", t0)
			if err != nil || got.TunnelID != "tun-z" || got.Status != store.StatusRemoved {
				t.Errorf("deprovision #%d = %+v, %v; want removed with tunnel tun-z", i+1, got, err)
			}
		}
	})

	t.Run("channels", func(t *testing.T) {
		s := openDSN(t, newDSN(t))
		for want := int64(1); want <= 2; want++ {
			c, err := s.SetChannelImages(ctx, "stable", map[string]string{"platform": "img@sha256:" + string(rune('0'+want))})
			if err != nil || c.Revision != want {
				t.Fatalf("SetChannelImages = %+v, %v; want revision %d", c, err, want)
			}
		}
		cs, err := s.Channels(ctx)
		if err != nil || len(cs) != 1 || cs[0].Images["platform"] != "img@sha256:2" {
			t.Errorf("Channels = %+v, %v", cs, err)
		}
	})
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestOpenRejectsUnknownScheme(t *testing.T) {
	for _, dsn := range []string{"", "mysql://x", "sqlite://", "/tmp/x.db"} {
		if _, err := store.Open(context.Background(), dsn, nil); err == nil {
			t.Errorf("Open(%q) succeeded, want error", dsn)
		}
	}
}
