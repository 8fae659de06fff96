package bootstrap

import (
	"context"
	"errors"
	"fmt"
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
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
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

// registered is done once the control plane section names a host ID.
func registered(r *status.Report) (bool, string, error) {
	if r.Agent.Phase == "idle" {
		return false, "", errors.New("the agent is idle: this host was deprovisioned by the control plane")
	}
	sec, ok := r.Sections[ControlPlaneSection].(map[string]any)
	if !ok {
		return false, "the agent reports no control plane state yet", nil
	}
	id, _ := sec["host_id"].(string)
	reg, _ := sec["registered"].(bool)
	if id != "" || reg {
		if id == "" {
			return true, "registered", nil
		}
		return true, "host " + id, nil
	}
	if e, _ := sec["last_error"].(string); e != "" {
		return false, "not registered: " + e, nil
	}
	return false, "not registered yet", nil
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
