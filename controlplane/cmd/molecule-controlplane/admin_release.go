package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
)

func releaseCmd(e env) *cobra.Command {
	var o adminOpts
	cmd := &cobra.Command{Use: "release", Short: "Roll images out to a channel in waves, and steer the rollout"}
	o.flags(cmd)

	var p api.RolloutPolicy
	var bake, timeout time.Duration
	set := &cobra.Command{
		Use:   "set CHANNEL UNIT=REPO@sha256:DIGEST...",
		Short: "Start rolling digest-pinned images out to a channel",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.RolloutRequest{Images: map[string]string{}, RolloutPolicy: p}
			req.BakeMS, req.WaveTimeoutMS = bake.Milliseconds(), timeout.Milliseconds()
			for _, a := range args[1:] {
				u, img, ok := strings.Cut(a, "=")
				if !ok || u == "" || img == "" {
					return fmt.Errorf("image %q: want UNIT=REPO@sha256:DIGEST", a)
				}
				req.Images[u] = img
			}
			if err := api.ValidateImages(req.Images); err != nil {
				return err
			}
			c, err := o.client(e)
			if err != nil {
				return err
			}
			r, err := c.StartRollout(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			return printRollouts(cmd.OutOrStdout(), o.json, r)
		},
	}
	sf := set.Flags()
	sf.IntVar(&p.Canary, "canary", 0, "hosts in the canary wave (0: the server's default)")
	sf.IntVar(&p.BatchPercent, "batch-percent", 0, "share of hosts in each later wave (0: the server's default)")
	sf.DurationVar(&bake, "bake", 0, "how long each wave stays ready before the next (0: the server's default)")
	sf.DurationVar(&timeout, "wave-timeout", 0, "how long a wave may take to become ready (0: the server's default)")

	status := &cobra.Command{
		Use: "status [CHANNEL]", Short: "Show the latest rollout of a channel, or of every channel", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client(e)
			if err != nil {
				return err
			}
			if len(args) == 1 {
				r, err := c.GetRollout(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				return printRollouts(cmd.OutOrStdout(), o.json, r)
			}
			rs, err := c.ListRollouts(cmd.Context())
			if err != nil {
				return err
			}
			if o.json {
				return printJSON(cmd.OutOrStdout(), api.RolloutList{Rollouts: rs})
			}
			return printRollouts(cmd.OutOrStdout(), false, rs...)
		},
	}
	cmd.AddCommand(set, status)
	for _, action := range []string{api.RolloutPause, api.RolloutResume, api.RolloutRollback} {
		var reason string
		sub := &cobra.Command{
			Use: action + " CHANNEL", Short: strings.ToUpper(action[:1]) + action[1:] + " the channel's rollout", Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := o.client(e)
				if err != nil {
					return err
				}
				r, err := c.ChangeRollout(cmd.Context(), args[0], action, reason)
				if err != nil {
					return err
				}
				return printRollouts(cmd.OutOrStdout(), o.json, r)
			},
		}
		if action != api.RolloutResume {
			sub.Flags().StringVar(&reason, "reason", "", "why, recorded with the rollout")
		}
		cmd.AddCommand(sub)
	}
	return cmd
}

func printRollouts(w io.Writer, asJSON bool, rs ...api.Rollout) error {
	if asJSON {
		return printJSON(w, rs[0])
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CHANNEL\tROLLOUT\tSTATE\tWAVE\tREADY\tIMAGES\tREASON")
	for _, r := range rs {
		wave, ready := "-", "-"
		if n := len(r.Waves); n > 0 {
			cur := min(r.Current, n-1)
			wave = fmt.Sprintf("%d/%d", min(r.Current+1, n), n)
			if r.State == api.RolloutCompleted {
				wave = fmt.Sprintf("%d/%d", n, n)
				ready = fmt.Sprintf("%d/%d", len(r.Waves[cur].Hosts), len(r.Waves[cur].Hosts))
			} else {
				ready = fmt.Sprintf("%d/%d", len(r.Waves[cur].Ready), len(r.Waves[cur].Hosts))
			}
		}
		var imgs []string
		for _, u := range slices.Sorted(maps.Keys(r.To)) {
			if r.From[u] != r.To[u] {
				imgs = append(imgs, u+"="+r.To[u])
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", r.Channel, r.ID, r.State, wave, ready, dash(strings.Join(imgs, ",")), dash(r.Reason))
	}
	return tw.Flush()
}
