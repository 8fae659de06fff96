-- +goose Up
-- Enrollment tokens are bound: single use by default (max_uses 0 means any
-- number, which only the admin API can ask for), optionally to one machine.
-- Tokens created before this migration become single use from now on.
ALTER TABLE enrollment_tokens ADD COLUMN max_uses BIGINT NOT NULL DEFAULT 1;
ALTER TABLE enrollment_tokens ADD COLUMN uses BIGINT NOT NULL DEFAULT 0;
ALTER TABLE enrollment_tokens ADD COLUMN machine_id TEXT NOT NULL DEFAULT '';
-- The enrollment token that created a host: a retried registration of the
-- same boot with the same token (a lost reply) gets the host back.
ALTER TABLE hosts ADD COLUMN enrollment_token_id TEXT NOT NULL DEFAULT '';
-- What the host last reported; hosts.tunnel_id keeps only a tunnel bound
-- to the host's org.
ALTER TABLE hosts ADD COLUMN reported_tunnel_id TEXT NOT NULL DEFAULT '';
UPDATE hosts SET reported_tunnel_id = tunnel_id;
-- One tunnel per org: the provisioned one, or the first one reported.
CREATE TABLE org_tunnels (
    org       TEXT PRIMARY KEY,
    tunnel_id TEXT NOT NULL UNIQUE,
    host_id   TEXT NOT NULL DEFAULT '',
    source    TEXT NOT NULL,
    bound_at  BIGINT NOT NULL
);
-- Existing hosts keep their tunnel when their org reported exactly one and
-- no other org reported it too.
INSERT INTO org_tunnels (org, tunnel_id, host_id, source, bound_at)
SELECT org, MIN(tunnel_id), MIN(id), 'migrated', MAX(updated_at) FROM hosts h
WHERE tunnel_id <> '' AND status <> 'removed'
  AND NOT EXISTS (SELECT 1 FROM hosts o WHERE o.tunnel_id = h.tunnel_id AND o.org <> h.org)
GROUP BY org HAVING COUNT(DISTINCT tunnel_id) = 1;
UPDATE hosts SET tunnel_id = '' WHERE tunnel_id <> ''
  AND NOT EXISTS (SELECT 1 FROM org_tunnels t WHERE t.org = hosts.org AND t.tunnel_id = hosts.tunnel_id);
-- Coalesced events: a repeat of (host, type, subject) within the coalescing
-- window bumps occurrences and last_at instead of adding a row.
ALTER TABLE events ADD COLUMN subject TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN occurrences BIGINT NOT NULL DEFAULT 1;
ALTER TABLE events ADD COLUMN last_at BIGINT NOT NULL DEFAULT 0;
UPDATE events SET last_at = at;
CREATE INDEX events_host_at ON events (host_id, at);
CREATE INDEX events_at ON events (at);
CREATE INDEX events_subject ON events (host_id, type, subject, id);
-- Token buckets shared by every replica (dashboard login throttle).
CREATE TABLE throttles (
    key        TEXT PRIMARY KEY,
    tokens     DOUBLE PRECISION NOT NULL,
    updated_at BIGINT NOT NULL
);
-- A one-row table the health probe writes.
CREATE TABLE health_probe (
    id BIGINT PRIMARY KEY,
    at BIGINT NOT NULL
);

-- +goose Down
DROP TABLE health_probe;
DROP TABLE throttles;
DROP INDEX events_subject;
DROP INDEX events_at;
DROP INDEX events_host_at;
ALTER TABLE events DROP COLUMN last_at;
ALTER TABLE events DROP COLUMN occurrences;
ALTER TABLE events DROP COLUMN subject;
DROP TABLE org_tunnels;
ALTER TABLE hosts DROP COLUMN reported_tunnel_id;
ALTER TABLE hosts DROP COLUMN enrollment_token_id;
ALTER TABLE enrollment_tokens DROP COLUMN machine_id;
ALTER TABLE enrollment_tokens DROP COLUMN uses;
ALTER TABLE enrollment_tokens DROP COLUMN max_uses;
