//go:build unix

package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/status"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
)

// ControlPlaneSection is the status report section the agent fills with
// its registration: a JSON object where a non-empty "host_id" (or
// "registered": true) means registered, and "last_error" says why not.
const ControlPlaneSection = "control_plane"

// cond judges one status report: done, or why not yet; an error ends the
// wait for good.
type cond func(*status.Report) (done bool, why string, err error)

// waitFor polls the status socket until c is done or ctx ends. The error
// on timeout carries the last reason it was not done.
func waitFor(ctx context.Context, socket string, poll time.Duration, what string, c cond) (*status.Report, string, error) {
	t := time.NewTicker(poll)
	defer t.Stop()
	last := "no answer yet"
	for {
		// Each query runs to its own short deadline, not the overall one: a
		// request cut off mid-dial leaves status.Get's keep-alive connection
		// open (it never closes its transport's idle connections).
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		r, err := status.Get(qctx, socket)
		cancel()
		if err == nil {
			done, why, cerr := c(r)
			if cerr != nil {
				return nil, "", cerr
			}
			if done {
				return r, why, nil
			}
			last = why
		} else if ctx.Err() == nil {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, "", fmt.Errorf("timed out waiting for %s: %s", what, last)
			}
			return nil, "", ctx.Err()
		case <-t.C:
		}
	}
}

// agentRunning is done once the agent serves status in phase "running".
func agentRunning(r *status.Report) (bool, string, error) {
	switch r.Agent.Phase {
	case "running":
		return true, fmt.Sprintf("pid %d, version %s", r.Agent.PID, r.Agent.Version), nil
	case "idle":
		return false, "", errors.New("the agent is idle: this host was deprovisioned by the control plane")
	}
	return false, "agent phase is " + r.Agent.Phase, nil
}

// registered is done once the control plane section says so. It reads
// the section whichever way the agent names it ("control_plane" or
// "fleet") and its fields (host_id or HostID, registered or Registered,
// last_error or LastError).
func registered(r *status.Report) (bool, string, error) {
	if r.Agent.Phase == "idle" {
		return false, "", errors.New("the agent is idle: this host was deprovisioned by the control plane")
	}
	sec := controlPlaneSection(r)
	if sec == nil {
		return false, "the agent reports no control plane state yet", nil
	}
	id, _ := field(sec, "host_id").(string)
	reg, _ := field(sec, "registered").(bool)
	gone, _ := field(sec, "gone").(bool)
	deprovisioned, _ := field(sec, "deprovisioned").(bool)
	if gone || deprovisioned {
		return false, "", errors.New("the control plane says this host was deprovisioned (410)")
	}
	if reg || (id != "" && field(sec, "registered") == nil) {
		if id == "" {
			return true, "registered", nil
		}
		return true, "host " + id, nil
	}
	if e, _ := field(sec, "last_error").(string); e != "" {
		return false, "not registered: " + e, nil
	}
	return false, "not registered yet", nil
}

func controlPlaneSection(r *status.Report) map[string]any {
	for _, name := range []string{ControlPlaneSection, "fleet", "controlplane"} {
		if m, ok := r.Sections[name].(map[string]any); ok {
			return m
		}
	}
	return nil
}

// field looks a key up ignoring case and underscores (host_id = HostID).
func field(m map[string]any, key string) any {
	norm := func(s string) string { return strings.ToLower(strings.ReplaceAll(s, "_", "")) }
	for k, v := range m {
		if norm(k) == norm(key) {
			return v
		}
	}
	return nil
}

// unitsReady is done when every unit is ready; a failed unit ends the
// wait (it has spent its restart budget or exited permanently).
func unitsReady(r *status.Report) (bool, string, error) {
	ready := 0
	why := ""
	for _, u := range r.Units {
		switch {
		case u.Ready:
			ready++
		case u.State == supervisor.Failed:
			return false, "", fmt.Errorf("unit %s failed: %s", u.Name, unitReason(u))
		case why == "":
			why = fmt.Sprintf("unit %s is %s", u.Name, u.State)
			if d := unitReason(u); d != "" {
				why += ": " + d
			}
		}
	}
	if ready == len(r.Units) {
		return true, fmt.Sprintf("%d/%d units ready", ready, len(r.Units)), nil
	}
	return false, why, nil
}

func unitReason(u supervisor.UnitStatus) string {
	switch {
	case u.Detail != "" && u.LastError != "":
		return u.Detail + " (" + u.LastError + ")"
	case u.Detail != "":
		return u.Detail
	case u.LastExit != "":
		return "last exit " + u.LastExit
	}
	return u.LastError
}
