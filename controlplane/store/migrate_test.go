package store_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pressly/goose/v3"

	"github.com/molecule-ai/molecule-agent/controlplane/store"
	"github.com/molecule-ai/molecule-agent/controlplane/store/pgtest"
)

// TestHostsFromBeforeIdentityBinding: a database migrated from before
// migration 00300 keeps its hosts working: the host token heartbeats and
// re-registers, the org's tunnel is the one its host reported, and another
// org's proof cannot take the host.
func TestHostsFromBeforeIdentityBinding(t *testing.T) {
	for _, b := range []struct {
		name, driver, dir string
		dialect           goose.Dialect
		before            int64
		dsn               func(t *testing.T) (dsn, conn string)
	}{
		{"sqlite", "sqlite", "migrations/sqlite", goose.DialectSQLite3, 101, func(t *testing.T) (string, string) {
			p := filepath.Join(t.TempDir(), "cp.db")
			return "sqlite://" + p, "file:" + p
		}},
		{"postgres", "pgx", "migrations/postgres", goose.DialectPostgres, 200, func(t *testing.T) (string, string) {
			dsn, err := pgtest.Start(t).NewDatabase(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			return dsn, dsn
		}},
	} {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			dsn, conn := b.dsn(t)
			db, err := sql.Open(b.driver, conn)
			if err != nil {
				t.Fatal(err)
			}
			p, err := goose.NewProvider(b.dialect, db, os.DirFS(b.dir))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.UpTo(ctx, b.before); err != nil {
				t.Fatal(err)
			}
			q := func(s string) string {
				if b.driver != "pgx" {
					return s
				}
				for i := 1; strings.Contains(s, "?"); i++ {
					s = strings.Replace(s, "?", "$"+strconv.Itoa(i), 1)
				}
				return s
			}
			for _, h := range []struct{ id, key, org, tunnel string }{
				{"h-old", "enroll:m-old", "acme", "tun-acme"}, {"h-other", "enroll:m-other", "globex", "tun-acme"},
				{"h-solo", "ec2:i-solo", "initech", "tun-ini"},
			} {
				if _, err := db.ExecContext(ctx, q(`INSERT INTO hosts (id, instance_key, org, role, workspace, channel, status, boot_id,
					agent_version, hostname, tunnel_id, token_hash, report, registered_at, last_seen, updated_at)
					VALUES (?, ?, ?, 'tenant', '', '', 'online', 'boot-1', '1.0', '', ?, ?, '', 1, 1, 1)`),
					h.id, h.key, h.org, h.tunnel, store.HashToken("tok-"+h.id)); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := db.ExecContext(ctx, q(`INSERT INTO enrollment_tokens (id, token_hash, org, role, workspace, channel, expires_at, created_at)
				VALUES ('e-old', ?, 'acme', 'tenant', '', '', ?, 1)`), store.HashToken("enroll-old"), t0.Add(1e12).UnixMilli()); err != nil {
				t.Fatal(err)
			}
			_ = db.Close()

			s := openDSN(t, dsn)
			r := store.Registration{InstanceKey: "enroll:m-old", NewHostID: "new", Org: "acme", Role: "tenant", BootID: "boot-2",
				NewTokenHash: store.HashToken("tok-2"), PresentedTokenHash: store.HashToken("tok-h-old"), EnrollmentTokenID: "e-old", Now: t0}
			if h, created, err := s.Register(ctx, r); err != nil || created || h.ID != "h-old" {
				t.Fatalf("re-register of an old host with its token = %v, %v, %v", h.ID, created, err)
			}
			r.Org, r.PresentedTokenHash, r.BootID = "globex", "", "boot-2"
			if _, _, err := s.Register(ctx, r); !errors.Is(err, store.ErrForeign) {
				t.Errorf("another org's registration of the old host err = %v, want ErrForeign", err)
			}
			tok, err := s.EnrollmentTokenByHash(ctx, store.HashToken("enroll-old"))
			if err != nil || tok.MaxUses != 1 || tok.Uses != 0 {
				t.Errorf("old enrollment token = %+v, %v; want single use, unused", tok, err)
			}
			// Two orgs claimed tun-acme: neither is bound, and neither host hands it out.
			if _, err := s.OrgTunnel(ctx, "acme"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("tunnel claimed by two orgs was bound: %v", err)
			}
			if h, err := s.Deprovision(ctx, "h-other", "", t0); err != nil || h.TunnelID != "" {
				t.Errorf("deprovision of a host with a disputed tunnel = %+v, %v; want no tunnel", h, err)
			}
			// An org whose hosts reported one tunnel keeps it.
			if id, err := s.OrgTunnel(ctx, "initech"); err != nil || id != "tun-ini" {
				t.Errorf("OrgTunnel(initech) = %q, %v; want tun-ini", id, err)
			}
			if h, err := s.Deprovision(ctx, "h-solo", "", t0); err != nil || h.TunnelID != "tun-ini" {
				t.Errorf("deprovision of the old tenant host = %+v, %v; want tunnel tun-ini", h, err)
			}
		})
	}
}
