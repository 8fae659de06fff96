package main

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/molecule-ai/molecule-agent/controlplane/sim"
)

func simulateCmd(e env) *cobra.Command {
	var (
		cfg     sim.Config
		tokFile string
	)
	cmd := &cobra.Command{
		Use:   "simulate",
		Short: "Drive a control plane with simulated agents: heartbeats/s, latency, store transactions per flush window, detection latency",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tok, err := adminToken(tokFile, e)
			if err != nil {
				return err
			}
			cfg.AdminToken = tok
			res, err := sim.Run(cmd.Context(), cfg)
			res.Report(cmd.OutOrStdout())
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.URL, "url", "http://127.0.0.1:7070", "control plane URL")
	f.StringVar(&tokFile, "admin-token-file", "", "file holding the admin token (else $MOLECULE_CP_ADMIN_TOKEN)")
	f.IntVar(&cfg.Hosts, "hosts", 2000, "simulated agents")
	f.DurationVar(&cfg.Interval, "interval", 0, "heartbeat interval (default: the control plane's)")
	f.DurationVar(&cfg.Duration, "duration", 30*time.Second, "length of the steady phase")
	f.IntVar(&cfg.Kill, "kill", 0, "silence this many hosts one interval in and report how fast the control plane marks them offline")
	f.DurationVar(&cfg.SaturateFor, "saturate", 0, "length of a phase sending heartbeats back to back (0: none)")
	f.IntVar(&cfg.Concurrency, "concurrency", 64, "workers in the saturated phase")
	return cmd
}
