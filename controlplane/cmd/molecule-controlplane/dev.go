package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
)

func devCmd(e env) *cobra.Command {
	var o serveOpts
	var dir string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the control plane on SQLite in a local directory, with an admin token and an enrollment token in files",
		Long: `dev keeps everything under --dir: the SQLite database, the admin token
(admin-token, 0600, made on first run) and a fresh enrollment token for a
workspace host (enrollment-token, 0600). It prints the URL and the paths, never
a token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return fmt.Errorf("--dir: %w", err)
			}
			if o.db == "" {
				abs, err := filepath.Abs(filepath.Join(dir, "cp.db"))
				if err != nil {
					return err
				}
				o.db = "sqlite://" + abs
			}
			tokFile := filepath.Join(dir, "admin-token")
			if o.adminTokenFile == "" {
				o.adminTokenFile = tokFile
				if err := ensureToken(tokFile); err != nil {
					return err
				}
			}
			tok, err := adminToken(o.adminTokenFile, e)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			return serve(cmd.Context(), o, tok, func(url string) {
				enrollFile := filepath.Join(dir, "enrollment-token")
				if err := writeEnrollment(cmd.Context(), url, tok, o.tlsCert, enrollFile); err != nil {
					fmt.Fprintf(out, "enrollment token not created: %v\n", err)
					enrollFile = "(none)"
				}
				fmt.Fprintf(out, "control plane: %s\ndashboard: %s/dashboard (sign in with the admin token)\nadmin token file: %s\nenrollment token file: %s\n", url, url, o.adminTokenFile, enrollFile)
			})
		},
	}
	cmd.Flags().StringVar(&dir, "dir", ".molecule-dev", "directory for the database and token files")
	o.flags(cmd, "")
	return cmd
}

func ensureToken(path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return writeSecretFile(path, base64.RawURLEncoding.EncodeToString(b))
}

// writeSecretFile writes v to path with mode 0600, atomically.
func writeSecretFile(path, v string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(v+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// writeEnrollment asks the control plane at url for an enrollment token;
// with TLS it trusts the certificate the control plane serves (certFile).
func writeEnrollment(ctx context.Context, url string, admin secret.Secret, certFile, path string) error {
	opts := api.Options{BaseURL: url, AdminToken: admin}
	if certFile != "" {
		pool, err := api.LoadCAFile(certFile)
		if err != nil {
			return err
		}
		opts.RootCAs = pool
	}
	c, err := api.New(opts)
	if err != nil {
		return err
	}
	t, err := c.CreateEnrollmentToken(ctx, api.EnrollmentTokenRequest{Org: "dev", Role: api.RoleWorkspace, Channel: "stable", TTLSeconds: 7 * 24 * 3600})
	if err != nil {
		return err
	}
	return writeSecretFile(path, strings.TrimSpace(t.Token))
}
