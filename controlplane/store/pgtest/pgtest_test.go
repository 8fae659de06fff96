package pgtest

import (
	"context"
	"database/sql"
	"testing"

	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

func TestStartQueryRestart(t *testing.T) {
	c := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Long)
	defer cancel()
	dsn, err := c.NewDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	var v string
	if err := db.QueryRowContext(ctx, "SHOW server_version").Scan(&v); err != nil {
		t.Fatal(err)
	}
	if v[:3] != "15." {
		t.Errorf("server_version = %q, want 15.x", v)
	}
	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := db.PingContext(ctx); err != nil {
		t.Errorf("ping after restart: %v", err)
	}
}
