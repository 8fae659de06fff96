-- +goose Up
CREATE TABLE rollouts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    channel    TEXT NOT NULL,
    state      TEXT NOT NULL,
    doc        TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX rollouts_channel ON rollouts (channel, id);
CREATE TABLE webhook_deliveries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    hook        TEXT NOT NULL,
    event_id    BIGINT NOT NULL,
    attempt     INTEGER NOT NULL,
    status_code INTEGER NOT NULL,
    error       TEXT NOT NULL DEFAULT '',
    at          BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id, id);
CREATE TABLE webhook_cursors (
    hook          TEXT PRIMARY KEY,
    last_event_id BIGINT NOT NULL
);

-- +goose Down
DROP TABLE webhook_cursors;
DROP TABLE webhook_deliveries;
DROP TABLE rollouts;
