package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
)

// env is what main reads from the environment.
type env struct {
	adminToken string
}

func run(ctx context.Context, args []string, e env, stdout io.Writer) error {
	root := &cobra.Command{
		Use:           "molecule-controlplane",
		Short:         "The molecule fleet control plane",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(adminCmds(e)...)
	root.AddCommand(serveCmd(e), devCmd(e), simulateCmd(e), &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), version) },
	})
	root.SetArgs(args)
	root.SetOut(stdout)
	return root.ExecuteContext(ctx)
}

// adminToken reads the admin token from path, else from the environment.
// It never comes from argv.
func adminToken(path string, e env) (secret.Secret, error) {
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return secret.Secret{}, fmt.Errorf("--admin-token-file: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return secret.Secret{}, fmt.Errorf("--admin-token-file %s is empty", path)
		}
		return secret.New(tok), nil
	}
	if e.adminToken != "" {
		return secret.New(e.adminToken), nil
	}
	return secret.Secret{}, fmt.Errorf("no admin token: pass --admin-token-file or set MOLECULE_CP_ADMIN_TOKEN")
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}
