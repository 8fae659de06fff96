-- +goose Up
CREATE TABLE declarations (
    instance_id TEXT PRIMARY KEY,
    org         TEXT NOT NULL,
    role        TEXT NOT NULL,
    workspace   TEXT NOT NULL DEFAULT '',
    channel     TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL
);
CREATE TABLE enrollment_tokens (
    id          TEXT PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,
    org         TEXT NOT NULL,
    role        TEXT NOT NULL,
    workspace   TEXT NOT NULL DEFAULT '',
    channel     TEXT NOT NULL DEFAULT '',
    expires_at  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE TABLE hosts (
    id            TEXT PRIMARY KEY,
    instance_key  TEXT NOT NULL UNIQUE,
    org           TEXT NOT NULL,
    role          TEXT NOT NULL,
    workspace     TEXT NOT NULL DEFAULT '',
    channel       TEXT NOT NULL DEFAULT '',
    status        TEXT NOT NULL,
    boot_id       TEXT NOT NULL,
    agent_version TEXT NOT NULL DEFAULT '',
    hostname      TEXT NOT NULL DEFAULT '',
    tunnel_id     TEXT NOT NULL DEFAULT '',
    token_hash    TEXT NOT NULL,
    report        TEXT NOT NULL DEFAULT '',
    registered_at BIGINT NOT NULL,
    last_seen     BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX hosts_org_status ON hosts (org, status);
CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    host_id TEXT NOT NULL,
    type    TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT '',
    at      BIGINT NOT NULL
);
CREATE INDEX events_host ON events (host_id, id);
CREATE TABLE channels (
    name     TEXT PRIMARY KEY,
    revision BIGINT NOT NULL,
    images   TEXT NOT NULL
);

-- +goose Down
DROP TABLE channels;
DROP TABLE events;
DROP TABLE hosts;
DROP TABLE enrollment_tokens;
DROP TABLE declarations;
