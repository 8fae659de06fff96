//go:build unix

package status

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/supervisor"
)

// WriteTable prints the report for a person: one line per unit.
func WriteTable(w io.Writer, r *Report, now time.Time) error {
	fmt.Fprintf(w, "agent %s  pid %d  %s  up %s\n", r.Agent.Version, r.Agent.PID, r.Agent.Phase,
		now.Sub(r.Agent.Started).Round(time.Second))
	for _, k := range slices.Sorted(maps.Keys(r.Sections)) {
		fmt.Fprintf(w, "%s: %s\n", k, oneLine(r.Sections[k]))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nUNIT\tKIND\tSTATE\tREADY\tPID/ID\tRESTARTS\tSINCE\tDETAIL")
	for _, u := range r.Units {
		id := u.ID
		if u.PID != 0 {
			id = fmt.Sprint(u.PID)
		}
		if len(id) > 12 {
			id = id[:12]
		}
		detail := u.Detail
		if u.LastError != "" && !u.Ready {
			detail = strings.TrimSpace(detail + " " + u.LastError)
		}
		if u.LastExit != "" && u.State != "ready" {
			detail = strings.TrimSpace(detail + " (last: " + u.LastExit + ")")
		}
		for _, kv := range facetPairs(u.Facets) {
			detail = strings.TrimSpace(detail + " " + kv)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", u.Name, u.Kind, u.State, yesNo(u.Ready),
			dash(id), u.Restarts, now.Sub(u.Since).Round(time.Second), dash(detail))
	}
	return tw.Flush()
}

// facetPairs shows a unit's facets as key=value words.
func facetPairs(f supervisor.Facets) []string {
	var out []string
	add := func(k string, v any) {
		if v != "" && v != 0 && v != int64(0) {
			out = append(out, fmt.Sprintf("%s=%v", k, v))
		}
	}
	if c := f.Container; c != nil {
		add("image", c.Image)
		if u := c.Update; u != nil {
			add("update_phase", u.Phase)
			add("update_to", u.To)
			add("update_reason", u.Reason)
			if u.PullTotal > 0 {
				add("pull_bytes", fmt.Sprintf("%d/%d", u.PullBytes, u.PullTotal))
			}
		}
	}
	if t := f.Tunnel; t != nil {
		add("tunnel_id", t.ID)
		add("connector_id", t.ConnectorID)
		if t.ConnectorID != "" {
			out = append(out, fmt.Sprintf("ready_connections=%d", t.ReadyConnections))
		}
	}
	if w := f.Workspace; w != nil {
		add("registration", w.Registration)
		add("platform_status", w.PlatformStatus)
		add("registration_http_status", w.HTTPStatus)
		add("register_status", w.RegisterStatus)
		add("token_recovery", w.TokenRecovery)
		add("registration_detail", w.Detail)
	}
	return out
}

func oneLine(v any) string {
	if m, ok := v.(map[string]any); ok {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(m)) {
			parts = append(parts, fmt.Sprintf("%s=%v", k, m[k]))
		}
		return strings.Join(parts, " ")
	}
	return fmt.Sprint(v)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
