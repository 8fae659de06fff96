-- +goose Up
-- The sweeper of a multi-replica control plane judges liveness from the
-- database: it looks for online hosts by last_seen every second.
CREATE INDEX hosts_status_last_seen ON hosts (status, last_seen);

-- +goose Down
DROP INDEX hosts_status_last_seen;
