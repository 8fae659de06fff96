//go:build unix

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"time"

	"github.com/spf13/cobra"

	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/daemon"
	"github.com/molecule-ai/molecule-agent/agent/status"
)

const defaultConfig = "/etc/molecule-agent/agent.yaml"

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "molecule-agent",
		Short:         "The molecule host agent: supervises units, fetches secrets, reports to the control plane",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newRunCmd(), newStatusCmd(), newVersionCmd())
	root.AddCommand(newBootstrapCmd(), newUserdataCmd())
	return root
}

func newRunCmd() *cobra.Command {
	var cfgPath, level string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the agent in the foreground (what systemd starts)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(cmd.ErrOrStderr(), level)
			if err != nil {
				return err
			}
			return run(cmd.Context(), cfgPath, log)
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", defaultConfig, "path of agent.yaml")
	cmd.Flags().StringVar(&level, "log-level", "info", "debug, info, warn or error")
	return cmd
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func run(ctx context.Context, cfgPath string, log *slog.Logger) error {
	log.Info("agent starting", "version", version, "config", cfgPath)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	d, err := daemon.Assemble(ctx, cfg, log, version)
	if err != nil {
		return err
	}
	return d.Run(ctx)
}

func newStatusCmd() *cobra.Command {
	var socket, cfgPath string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the running agent's units",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, err := socketPath(socket, cfgPath)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
			defer cancel()
			r, err := status.Get(ctx, path)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(r)
			}
			return status.WriteTable(cmd.OutOrStdout(), r, time.Now())
		},
	}
	cmd.Flags().StringVar(&socket, "socket", "", "status socket (default: from the config, else "+config.DefaultRunDir+"/"+config.DefaultSocketName+")")
	cmd.Flags().StringVar(&cfgPath, "config", defaultConfig, "path of agent.yaml, to find the socket")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func socketPath(flag, cfgPath string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	cfg, err := config.Load(cfgPath)
	if os.IsNotExist(unwrapAll(err)) {
		return config.DefaultRunDir + "/" + config.DefaultSocketName, nil
	}
	if err != nil {
		return "", err
	}
	return cfg.SocketPath(), nil
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "molecule-agent %s %s/%s %s\n", version, runtime.GOOS, runtime.GOARCH, runtime.Version())
		},
	}
}
