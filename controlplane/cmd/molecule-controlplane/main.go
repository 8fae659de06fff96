// Command molecule-controlplane is the molecule fleet's control plane: it
// registers hosts, receives their heartbeats, judges their liveness and
// serves the admin API. `serve` runs it, `dev` runs it on SQLite for one
// machine, `simulate` drives it with a simulated fleet.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], env{adminToken: os.Getenv("MOLECULE_CP_ADMIN_TOKEN")}, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "molecule-controlplane:", err)
		os.Exit(1)
	}
}
