package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// roleTenant is the role whose host runs its org's tunnel.
const roleTenant = "tenant"

// EventTunnelMismatch is recorded when a host reports a tunnel other than
// its org's.
const EventTunnelMismatch = "tunnel_mismatch"

// Tunnels keeps each org's Cloudflare tunnel: the one the control plane
// provisioned, or else the first one a host of the org reported. A report
// never changes it; a different one is a tunnel_mismatch event.
type Tunnels interface {
	// BindTunnel records tunnelID as org's provisioned tunnel, replacing
	// any; ErrConflict if another org has it.
	BindTunnel(ctx context.Context, org, tunnelID string, now time.Time) error
	// OrgTunnel returns org's recorded tunnel, or ErrNotFound.
	OrgTunnel(ctx context.Context, org string) (string, error)
}

func (s *sqlStore) BindTunnel(ctx context.Context, org, tunnelID string, now time.Time) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		var other string
		err := tx.QueryRowContext(ctx, s.q(`SELECT org FROM org_tunnels WHERE tunnel_id = ?`), tunnelID).Scan(&other)
		switch {
		case err == nil && other != org:
			return fmt.Errorf("tunnel %s is bound to org %s: %w", tunnelID, other, ErrConflict)
		case err != nil && !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("look up tunnel %s: %w", tunnelID, err)
		}
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO org_tunnels (org, tunnel_id, host_id, source, bound_at)
			VALUES (?, ?, '', 'provisioned', ?) ON CONFLICT (org) DO UPDATE SET tunnel_id = excluded.tunnel_id,
			host_id = '', source = 'provisioned', bound_at = excluded.bound_at`), org, tunnelID, ms(now)); err != nil {
			return fmt.Errorf("bind tunnel of org %s: %w", org, err)
		}
		return nil
	})
}

func (s *sqlStore) OrgTunnel(ctx context.Context, org string) (string, error) {
	return orgTunnel(ctx, s, s.db, org)
}

type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func orgTunnel(ctx context.Context, s *sqlStore, q queryer, org string) (string, error) {
	var id string
	err := q.QueryRowContext(ctx, s.q(`SELECT tunnel_id FROM org_tunnels WHERE org = ?`), org).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("get tunnel of org %s: %w", org, err)
	}
	return id, nil
}

// reportTunnel records the tunnel a host reported at: the first report of
// an org without a tunnel binds it (unless another org has it); the host's
// tunnel_id becomes the org's once it reports it; a different report is a
// tunnel_mismatch event, once per change. Only the tenant host runs its
// org's tunnel: while the org has one, a report from a host of another role
// binds nothing and is a mismatch (an org of workspace hosts only, as in
// development, binds the first one's).
func (s *sqlStore) reportTunnel(ctx context.Context, tx *sql.Tx, hostID, reported string, at time.Time) error {
	var org, role, prev string
	err := tx.QueryRowContext(ctx, s.q(`SELECT org, role, reported_tunnel_id FROM hosts WHERE id = ? AND status <> 'removed'`), hostID).Scan(&org, &role, &prev)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get host %s: %w", hostID, err)
	}
	if reported == prev {
		return nil
	}
	if _, err := tx.ExecContext(ctx, s.q(`UPDATE hosts SET reported_tunnel_id = ? WHERE id = ?`), reported, hostID); err != nil {
		return fmt.Errorf("record reported tunnel of host %s: %w", hostID, err)
	}
	if reported == "" {
		return nil
	}
	if role != roleTenant {
		var tenants int
		if err := tx.QueryRowContext(ctx, s.q(`SELECT count(*) FROM hosts WHERE org = ? AND role = ? AND status <> 'removed'`),
			org, roleTenant).Scan(&tenants); err != nil {
			return fmt.Errorf("count tenant hosts of org %s: %w", org, err)
		}
		if tenants > 0 {
			return s.insertEvents(ctx, tx, []Event{{HostID: hostID, Type: EventTunnelMismatch, Subject: reported, At: at,
				Detail: fmt.Sprintf("a %s host reported tunnel %s; org %s's tenant host runs its tunnel; ignored", role, reported, org)}})
		}
	}
	recorded, err := orgTunnel(ctx, s, tx, org)
	if errors.Is(err, ErrNotFound) {
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO org_tunnels (org, tunnel_id, host_id, source, bound_at)
			VALUES (?, ?, ?, 'reported', ?) ON CONFLICT DO NOTHING`), org, reported, hostID, ms(at)); err != nil {
			return fmt.Errorf("bind tunnel of org %s: %w", org, err)
		}
		recorded, err = orgTunnel(ctx, s, tx, org)
		if errors.Is(err, ErrNotFound) { // another org has the tunnel
			return s.insertEvents(ctx, tx, []Event{{HostID: hostID, Type: EventTunnelMismatch, Subject: reported, At: at,
				Detail: fmt.Sprintf("host reported tunnel %s, which is bound to another org; ignored", reported)}})
		}
	}
	if err != nil {
		return err
	}
	if recorded != reported {
		return s.insertEvents(ctx, tx, []Event{{HostID: hostID, Type: EventTunnelMismatch, Subject: reported, At: at,
			Detail: fmt.Sprintf("host reported tunnel %s; org %s's tunnel is %s; kept %s", reported, org, recorded, recorded)}})
	}
	if _, err := tx.ExecContext(ctx, s.q(`UPDATE hosts SET tunnel_id = ? WHERE id = ?`), recorded, hostID); err != nil {
		return fmt.Errorf("record tunnel of host %s: %w", hostID, err)
	}
	return nil
}

// releaseTunnel returns the tunnel a deprovision hands out for deletion:
// the org's recorded tunnel when host h ran it and no other live host of
// the org does, and then forgets it so the org's next host can bind a new
// one. Otherwise "".
func (s *sqlStore) releaseTunnel(ctx context.Context, tx *sql.Tx, h Host) (string, error) {
	if h.TunnelID == "" {
		return "", nil
	}
	recorded, err := orgTunnel(ctx, s, tx, h.Org)
	if errors.Is(err, ErrNotFound) || (err == nil && recorded != h.TunnelID) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var others int
	if err := tx.QueryRowContext(ctx, s.q(`SELECT count(*) FROM hosts WHERE org = ? AND tunnel_id = ? AND id <> ? AND status <> 'removed'`),
		h.Org, recorded, h.ID).Scan(&others); err != nil {
		return "", fmt.Errorf("count hosts on tunnel %s: %w", recorded, err)
	}
	if others > 0 {
		return "", nil
	}
	if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM org_tunnels WHERE org = ? AND tunnel_id = ?`), h.Org, recorded); err != nil {
		return "", fmt.Errorf("release tunnel %s: %w", recorded, err)
	}
	return recorded, nil
}
