package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
)

func hostsCmd(e env) *cobra.Command {
	var o adminOpts
	var f api.HostFilter
	cmd := &cobra.Command{Use: "hosts", Short: "List, inspect and deprovision hosts"}
	o.flags(cmd)
	list := &cobra.Command{
		Use: "list", Short: "List hosts", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client(e)
			if err != nil {
				return err
			}
			hosts, err := c.ListHosts(cmd.Context(), f)
			if err != nil {
				return err
			}
			if o.json {
				return printJSON(cmd.OutOrStdout(), api.HostList{Hosts: hosts})
			}
			return hostTable(cmd.OutOrStdout(), hosts, time.Now())
		},
	}
	lf := list.Flags()
	lf.StringVar(&f.Org, "org", "", "only this org")
	lf.StringVar(&f.Role, "role", "", "only this role")
	lf.StringVar(&f.Channel, "channel", "", "only this channel")
	lf.StringVar(&f.Status, "status", "", "only this status (online, offline, removed)")
	show := &cobra.Command{
		Use: "show HOST_ID", Short: "Show one host with its units", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client(e)
			if err != nil {
				return err
			}
			h, err := c.GetHost(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if o.json {
				return printJSON(cmd.OutOrStdout(), h)
			}
			return hostDetail(cmd.OutOrStdout(), h)
		},
	}
	deprov := &cobra.Command{
		Use: "deprovision HOST_ID", Short: "Mark a host removed; prints the tunnel ID to delete at Cloudflare", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client(e)
			if err != nil {
				return err
			}
			r, err := c.Deprovision(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if o.json {
				return printJSON(cmd.OutOrStdout(), r)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "HOST\tSTATUS\tTUNNEL")
			fmt.Fprintf(tw, "%s\t%s\t%s\n", r.HostID, r.Status, dash(r.TunnelID))
			return tw.Flush()
		},
	}
	cmd.AddCommand(list, show, deprov)
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func tunnelOf(h api.Host) string {
	if h.Report == nil || h.Report.Tunnel == nil {
		return "-"
	}
	if h.Report.Tunnel.ReadyConnections > 0 {
		return fmt.Sprintf("ready(%d)", h.Report.Tunnel.ReadyConnections)
	}
	return "not-ready"
}

func unitsOf(h api.Host) string {
	if h.Report == nil {
		return "-"
	}
	var parts []string
	for _, u := range h.Report.Units {
		parts = append(parts, u.Name+"="+u.State)
	}
	return dash(strings.Join(parts, ","))
}

func hostTable(w io.Writer, hosts []api.Host, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tORG\tROLE\tCHANNEL\tSTATUS\tLAST SEEN\tTUNNEL\tUNITS\tAGENT")
	for _, h := range hosts {
		seen := "never"
		if !h.LastSeen.IsZero() {
			seen = now.Sub(h.LastSeen).Round(time.Second).String() + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.ID, h.Org, h.Role, dash(h.Channel), h.Status, seen,
			tunnelOf(h), unitsOf(h), dash(h.AgentVersion))
	}
	return tw.Flush()
}

func hostDetail(w io.Writer, h api.Host) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, kv := range [][2]string{
		{"ID", h.ID}, {"Instance", h.InstanceKey}, {"Org", h.Org}, {"Role", h.Role}, {"Workspace", dash(h.Workspace)},
		{"Channel", dash(h.Channel)}, {"Status", h.Status}, {"Last seen", h.LastSeen.UTC().Format(time.RFC3339)},
		{"Registered", h.RegisteredAt.UTC().Format(time.RFC3339)}, {"Agent", dash(h.AgentVersion)},
		{"Hostname", dash(h.Hostname)}, {"Tunnel", dash(h.TunnelID) + " " + tunnelOf(h)},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if h.Report == nil {
		return nil
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "UNIT\tSTATE\tRESTARTS\tIMAGE")
	for _, u := range h.Report.Units {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", u.Name, u.State, u.Restarts, dash(u.Image))
	}
	for _, up := range h.Report.Updates {
		fmt.Fprintf(tw, "update %s\t%s\t\t%s %s\n", up.Unit, up.Phase, up.Digest, up.Detail)
	}
	return tw.Flush()
}

func eventsCmd(e env) *cobra.Command {
	var o adminOpts
	var since int64
	var limit int
	cmd := &cobra.Command{
		Use: "events", Short: "Page through events after an ID", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client(e)
			if err != nil {
				return err
			}
			p, err := c.EventFeed(cmd.Context(), since, limit)
			if err != nil {
				return err
			}
			if o.json {
				return printJSON(cmd.OutOrStdout(), p)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tAT\tKIND\tHOST\tDETAIL")
			for _, ev := range p.Events {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", ev.ID, ev.At.UTC().Format(time.RFC3339), ev.Kind, dash(ev.HostID), ev.Detail)
			}
			return tw.Flush()
		},
	}
	o.flags(cmd)
	cmd.Flags().Int64Var(&since, "since", 0, "show events after this ID")
	cmd.Flags().IntVar(&limit, "limit", 100, "at most this many events (1-1000)")
	return cmd
}
