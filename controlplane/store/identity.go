package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// EventRegisterRefused is the audit event of a refused registration.
const EventRegisterRefused = "register_refused"

func (s *sqlStore) CreateEnrollmentToken(ctx context.Context, t EnrollmentToken) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO enrollment_tokens
			(id, token_hash, org, role, workspace, channel, expires_at, created_at, max_uses, uses, machine_id)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)`),
			t.ID, t.Hash, t.Org, t.Role, t.Workspace, t.Channel, ms(t.ExpiresAt), ms(t.CreatedAt), t.MaxUses, t.MachineID)
		if err != nil {
			return fmt.Errorf("create enrollment token: %w", err)
		}
		return nil
	})
}

func (s *sqlStore) EnrollmentTokenByHash(ctx context.Context, hash string) (EnrollmentToken, error) {
	var t EnrollmentToken
	var exp, created int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT id, token_hash, org, role, workspace, channel, expires_at, created_at,
		max_uses, uses, machine_id FROM enrollment_tokens WHERE token_hash = ?`), hash).
		Scan(&t.ID, &t.Hash, &t.Org, &t.Role, &t.Workspace, &t.Channel, &exp, &created, &t.MaxUses, &t.Uses, &t.MachineID)
	if errors.Is(err, sql.ErrNoRows) {
		return EnrollmentToken{}, ErrNotFound
	}
	if err != nil {
		return EnrollmentToken{}, fmt.Errorf("get enrollment token: %w", err)
	}
	t.ExpiresAt, t.CreatedAt = fromMS(exp), fromMS(created)
	return t, nil
}

// refusal is a registration refused after the host was looked up: the
// transaction is rolled back and only the audit event is written.
type refusal struct {
	err   error
	event Event
}

func (r *refusal) Error() string { return r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

func (s *sqlStore) Register(ctx context.Context, r Registration) (Host, bool, error) {
	var h Host
	var created bool
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		h, err = scanHost(tx.QueryRowContext(ctx, s.q(`SELECT `+hostCols+` FROM hosts WHERE instance_key = ?`), r.InstanceKey))
		switch {
		case errors.Is(err, sql.ErrNoRows):
			created = true
			return s.insertHost(ctx, tx, r, &h)
		case err != nil:
			return fmt.Errorf("get host by instance: %w", err)
		case h.Status == StatusRemoved:
			return ErrRemoved
		}
		if err := rebind(h, r); err != nil {
			return &refusal{err: err, event: Event{HostID: h.ID, Type: EventRegisterRefused, Subject: r.InstanceKey + " " + r.Org + " " + r.Role,
				Detail: fmt.Sprintf("%v: instance %s, proof for org %q role %q, boot %s", err, r.InstanceKey, r.Org, r.Role, r.BootID), At: r.Now}}
		}
		h.BootID, h.AgentVersion, h.Hostname, h.TokenHash = r.BootID, r.AgentVersion, r.Hostname, r.NewTokenHash
		h.Status, h.LastSeen, h.UpdatedAt = StatusOnline, r.Now, r.Now
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE hosts SET boot_id = ?, agent_version = ?, hostname = ?,
			token_hash = ?, status = ?, last_seen = ?, updated_at = ? WHERE id = ?`),
			h.BootID, h.AgentVersion, h.Hostname, h.TokenHash, h.Status, ms(r.Now), ms(r.Now), h.ID); err != nil {
			return fmt.Errorf("update host: %w", err)
		}
		return s.insertEvents(ctx, tx, []Event{{HostID: h.ID, Type: "registered", Detail: "boot " + r.BootID, At: r.Now}})
	})
	var ref *refusal
	if errors.As(err, &ref) {
		if aerr := s.Audit(ctx, ref.event); aerr != nil {
			return Host{}, false, fmt.Errorf("%w (and its audit event was not recorded: %v)", ref.err, aerr)
		}
		return Host{}, false, ref.err
	}
	if err != nil {
		return Host{}, false, err
	}
	return h, created, nil
}

// rebind says whether r may take over the registered host h: never one of
// another org, role or workspace; else with the host's current token, or on
// a retry of the same boot by a fresh attestation or by the enrollment token
// that created the host.
func rebind(h Host, r Registration) error {
	if h.Org != r.Org || h.Role != r.Role || (r.Workspace != "" && h.Workspace != r.Workspace) {
		return ErrForeign
	}
	if r.PresentedTokenHash != "" && r.PresentedTokenHash == h.TokenHash {
		return nil
	}
	if h.BootID == r.BootID && (r.Attested || (r.EnrollmentTokenID != "" && r.EnrollmentTokenID == h.EnrollmentTokenID)) {
		return nil
	}
	return ErrConflict
}

// insertHost creates the host of r, using one use of its enrollment token.
func (s *sqlStore) insertHost(ctx context.Context, tx *sql.Tx, r Registration, h *Host) error {
	if r.EnrollmentTokenID != "" {
		res, err := tx.ExecContext(ctx, s.q(`UPDATE enrollment_tokens SET uses = uses + 1
			WHERE id = ? AND (max_uses = 0 OR uses < max_uses)`), r.EnrollmentTokenID)
		if err != nil {
			return fmt.Errorf("use enrollment token: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return &refusal{err: ErrTokenUsed, event: Event{Type: EventRegisterRefused, Subject: "token " + r.EnrollmentTokenID,
				Detail: fmt.Sprintf("enrollment token %s has no use left: instance %s, boot %s", r.EnrollmentTokenID, r.InstanceKey, r.BootID), At: r.Now}}
		}
	}
	*h = Host{ID: r.NewHostID, InstanceKey: r.InstanceKey, Org: r.Org, Role: r.Role, Workspace: r.Workspace,
		Channel: r.Channel, Status: StatusOnline, BootID: r.BootID, AgentVersion: r.AgentVersion,
		Hostname: r.Hostname, TokenHash: r.NewTokenHash, EnrollmentTokenID: r.EnrollmentTokenID,
		RegisteredAt: r.Now, LastSeen: r.Now, UpdatedAt: r.Now}
	if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO hosts (`+hostCols+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		h.ID, h.InstanceKey, h.Org, h.Role, h.Workspace, h.Channel, h.Status, h.BootID, h.AgentVersion,
		h.Hostname, "", h.TokenHash, "", ms(r.Now), ms(r.Now), ms(r.Now), h.EnrollmentTokenID, ""); err != nil {
		return fmt.Errorf("insert host: %w", err)
	}
	return s.insertEvents(ctx, tx, []Event{{HostID: h.ID, Type: "registered", Detail: "boot " + r.BootID, At: r.Now}})
}

func (s *sqlStore) Audit(ctx context.Context, e Event) error {
	return s.write(ctx, func(tx *sql.Tx) error { return s.insertEvents(ctx, tx, []Event{e}) })
}
