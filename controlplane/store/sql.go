package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

type sqlStore struct {
	db      *sql.DB
	d       dialect
	writeTx atomic.Uint64
	policy  atomic.Pointer[EventPolicy]
	health  writeHealth
}

// q rewrites ? placeholders to $n for PostgreSQL.
func (s *sqlStore) q(query string) string {
	if s.d != postgres {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func ms(t time.Time) int64 { return t.UnixMilli() }

func fromMS(v int64) time.Time { return time.UnixMilli(v).UTC() }

// write runs fn in a write transaction and counts it.
func (s *sqlStore) write(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return s.noteWrite(fmt.Errorf("begin transaction: %w", err))
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return s.noteWrite(err)
	}
	if err := tx.Commit(); err != nil {
		return s.noteWrite(fmt.Errorf("commit: %w", err))
	}
	s.writeTx.Add(1)
	return s.noteWrite(nil)
}

func (s *sqlStore) Stats() Stats { return Stats{WriteTx: s.writeTx.Load()} }

func (s *sqlStore) Close() error { return s.db.Close() }

func (s *sqlStore) PutDeclaration(ctx context.Context, d Declaration) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO declarations (instance_id, org, role, workspace, channel, created_at)
			VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (instance_id) DO UPDATE SET org = excluded.org, role = excluded.role,
			workspace = excluded.workspace, channel = excluded.channel`),
			d.InstanceID, d.Org, d.Role, d.Workspace, d.Channel, ms(d.CreatedAt))
		if err != nil {
			return fmt.Errorf("declare instance %s: %w", d.InstanceID, err)
		}
		return nil
	})
}

func (s *sqlStore) GetDeclaration(ctx context.Context, instanceID string) (Declaration, error) {
	var d Declaration
	var created int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT instance_id, org, role, workspace, channel, created_at
		FROM declarations WHERE instance_id = ?`), instanceID).
		Scan(&d.InstanceID, &d.Org, &d.Role, &d.Workspace, &d.Channel, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return Declaration{}, ErrNotFound
	}
	if err != nil {
		return Declaration{}, fmt.Errorf("get declaration %s: %w", instanceID, err)
	}
	d.CreatedAt = fromMS(created)
	return d, nil
}

const hostCols = `id, instance_key, org, role, workspace, channel, status, boot_id, agent_version, hostname,
	tunnel_id, token_hash, report, registered_at, last_seen, updated_at, enrollment_token_id, reported_tunnel_id`

type scanner interface{ Scan(...any) error }

func scanHost(r scanner) (Host, error) {
	var h Host
	var reg, seen, upd int64
	err := r.Scan(&h.ID, &h.InstanceKey, &h.Org, &h.Role, &h.Workspace, &h.Channel, &h.Status, &h.BootID,
		&h.AgentVersion, &h.Hostname, &h.TunnelID, &h.TokenHash, &h.Report, &reg, &seen, &upd,
		&h.EnrollmentTokenID, &h.ReportedTunnelID)
	h.RegisteredAt, h.LastSeen, h.UpdatedAt = fromMS(reg), fromMS(seen), fromMS(upd)
	return h, err
}

func (s *sqlStore) GetHost(ctx context.Context, id string) (Host, error) {
	h, err := scanHost(s.db.QueryRowContext(ctx, s.q(`SELECT `+hostCols+` FROM hosts WHERE id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return Host{}, ErrNotFound
	}
	if err != nil {
		return Host{}, fmt.Errorf("get host %s: %w", id, err)
	}
	return h, nil
}

func (s *sqlStore) ListHosts(ctx context.Context, f HostFilter) ([]Host, error) {
	where := []string{"1 = 1"}
	var args []any
	for col, v := range map[string]string{"org": f.Org, "role": f.Role, "workspace": f.Workspace, "channel": f.Channel, "status": f.Status} {
		if v != "" {
			where = append(where, col+" = ?")
			args = append(args, v)
		}
	}
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+hostCols+` FROM hosts WHERE `+strings.Join(where, " AND ")+` ORDER BY registered_at, id`), args...)
	if err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	defer func() { _ = rows.Close() }()
	var out []Host
	for rows.Next() {
		h, err := scanHost(rows)
		if err != nil {
			return nil, fmt.Errorf("list hosts: %w", err)
		}
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	return out, nil
}

func (s *sqlStore) Flush(ctx context.Context, updates []LiveUpdate, events []Event) error {
	if len(updates) == 0 && len(events) == 0 {
		return nil
	}
	seen := make(map[string]int64, len(updates))
	for _, u := range updates {
		if !u.LastSeen.IsZero() {
			seen[u.HostID] = ms(u.LastSeen)
		}
	}
	batch, err := json.Marshal(seen)
	if err != nil {
		return fmt.Errorf("encode flush batch: %w", err)
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		if len(seen) > 0 {
			q := `UPDATE hosts SET last_seen = j.value FROM json_each(?) AS j
				WHERE hosts.id = j.key AND hosts.last_seen < j.value AND hosts.status <> 'removed'`
			if s.d == postgres {
				q = `UPDATE hosts SET last_seen = j.value::bigint FROM jsonb_each_text($1::jsonb) AS j
				WHERE hosts.id = j.key AND hosts.last_seen < j.value::bigint AND hosts.status <> 'removed'`
			}
			if _, err := tx.ExecContext(ctx, q, string(batch)); err != nil {
				return fmt.Errorf("flush last_seen of %d hosts: %w", len(seen), err)
			}
		}
		for _, u := range updates {
			if u.Status != "" {
				if _, err := tx.ExecContext(ctx, s.q(`UPDATE hosts SET status = ?, updated_at = ? WHERE id = ? AND status <> 'removed'`),
					u.Status, ms(u.LastSeen), u.HostID); err != nil {
					return fmt.Errorf("flush status of host %s: %w", u.HostID, err)
				}
			}
			if u.Report != "" {
				if _, err := tx.ExecContext(ctx, s.q(`UPDATE hosts SET report = ?, agent_version = ?, updated_at = ?
					WHERE id = ? AND status <> 'removed'`), u.Report, u.AgentVersion, ms(u.LastSeen), u.HostID); err != nil {
					return fmt.Errorf("flush report of host %s: %w", u.HostID, err)
				}
				if err := s.reportTunnel(ctx, tx, u.HostID, u.TunnelID, u.LastSeen); err != nil {
					return err
				}
			}
		}
		return s.insertEvents(ctx, tx, events)
	})
}

func (s *sqlStore) Deprovision(ctx context.Context, id, tunnelID string, now time.Time) (Host, error) {
	var h Host
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		h, err = scanHost(tx.QueryRowContext(ctx, s.q(`SELECT `+hostCols+` FROM hosts WHERE id = ?`), id))
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("get host %s: %w", id, err)
		}
		if h.Status == StatusRemoved {
			return nil
		}
		if tunnelID != "" { // the live report, maybe newer than the last flush
			if err := s.reportTunnel(ctx, tx, id, tunnelID, now); err != nil {
				return err
			}
			if h, err = scanHost(tx.QueryRowContext(ctx, s.q(`SELECT `+hostCols+` FROM hosts WHERE id = ?`), id)); err != nil {
				return fmt.Errorf("get host %s: %w", id, err)
			}
		}
		if h.TunnelID, err = s.releaseTunnel(ctx, tx, h); err != nil {
			return err
		}
		h.Status, h.UpdatedAt = StatusRemoved, now
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE hosts SET status = ?, updated_at = ?, tunnel_id = ? WHERE id = ?`), StatusRemoved, ms(now), h.TunnelID, id); err != nil {
			return fmt.Errorf("deprovision host %s: %w", id, err)
		}
		return s.insertEvents(ctx, tx, []Event{{HostID: id, Type: "removed", Detail: "tunnel " + h.TunnelID, At: now}})
	})
	return h, err
}

func (s *sqlStore) Events(ctx context.Context, hostID string, limit int) ([]Event, error) {
	if limit <= 0 || limit > 10000 {
		limit = 1000
	}
	q := `SELECT ` + eventCols + ` FROM events WHERE (? = '' OR host_id = ?) ORDER BY id DESC LIMIT ?`
	rows, err := s.db.QueryContext(ctx, s.q(q), hostID, hostID, limit)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	out, err := scanEvents(rows)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

func (s *sqlStore) SetChannelImages(ctx context.Context, name string, images map[string]string) (Channel, error) {
	b, err := json.Marshal(images)
	if err != nil {
		return Channel{}, fmt.Errorf("encode images: %w", err)
	}
	c := Channel{Name: name, Images: images}
	err = s.write(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, s.q(`INSERT INTO channels (name, revision, images) VALUES (?, 1, ?)
			ON CONFLICT (name) DO UPDATE SET revision = channels.revision + 1, images = excluded.images
			RETURNING revision`), name, string(b)).Scan(&c.Revision)
		if err != nil {
			return fmt.Errorf("set images of channel %s: %w", name, err)
		}
		return nil
	})
	return c, err
}

func (s *sqlStore) Channels(ctx context.Context) ([]Channel, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, revision, images FROM channels ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list channels: %w", err)
	}
	defer func() { _ = rows.Close() }()
	var out []Channel
	for rows.Next() {
		var c Channel
		var imgs string
		if err := rows.Scan(&c.Name, &c.Revision, &imgs); err != nil {
			return nil, fmt.Errorf("list channels: %w", err)
		}
		if err := json.Unmarshal([]byte(imgs), &c.Images); err != nil {
			return nil, fmt.Errorf("channel %s: stored images: %w", c.Name, err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}
