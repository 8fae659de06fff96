-- +goose Up
ALTER TABLE rollouts ADD COLUMN version BIGINT NOT NULL DEFAULT 1;

-- +goose Down
ALTER TABLE rollouts DROP COLUMN version;
