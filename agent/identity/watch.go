//go:build unix

package identity

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"
)

// Notice kinds.
const (
	// SpotInterruption: EC2 will stop, hibernate or terminate the spot instance.
	SpotInterruption = "spot-interruption"
	// ASGTerminate: Auto Scaling is terminating the instance.
	ASGTerminate = "asg-terminate"
)

// DefaultWatchInterval is how often Watch polls when given no interval.
// Spot gives two minutes' warning.
const DefaultWatchInterval = 5 * time.Second

// Notice says the instance is going away.
type Notice struct {
	Kind   string    `json:"kind"`          // SpotInterruption or ASGTerminate
	Action string    `json:"action"`        // spot: terminate, stop, hibernate; ASG: the lifecycle state
	Time   time.Time `json:"time,omitzero"` // spot: when the action happens
}

// String gives the notice as a status line, e.g.
// "spot-interruption: terminate at 2026-01-02T03:06:05Z".
func (n Notice) String() string {
	if n.Time.IsZero() {
		return n.Kind + ": " + n.Action
	}
	return n.Kind + ": " + n.Action + " at " + n.Time.UTC().Format(time.RFC3339)
}

// Watch polls spot/instance-action and autoscaling/target-lifecycle-state
// every interval (DefaultWatchInterval if <= 0) and returns the first notice:
// a spot action, or a lifecycle state ending in "Terminated". It returns
// ctx's error when ctx ends first. Polling errors are logged once when they
// start and once when they stop, and polling goes on.
func (c *Client) Watch(ctx context.Context, interval time.Duration) (Notice, error) {
	if interval <= 0 {
		interval = DefaultWatchInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		n, ok, err := c.poll(ctx)
		switch {
		case ok:
			c.log.Warn("instance is going away", "notice", n.String())
			return n, nil
		case err != nil && ctx.Err() == nil && !failing:
			failing = true
			c.log.Warn("cannot poll imds for interruption notices; still trying", "error", err.Error())
		case err == nil && failing:
			failing = false
			c.log.Info("polling imds for interruption notices again")
		}
		select {
		case <-ctx.Done():
			return Notice{}, ctx.Err()
		case <-t.C:
		}
	}
}

// poll checks both notices once.
func (c *Client) poll(ctx context.Context) (Notice, bool, error) {
	spot, err := c.Metadata(ctx, "spot/instance-action")
	switch {
	case err == nil:
		return parseSpot(spot), true, nil
	case !errors.Is(err, ErrNotFound):
		return Notice{}, false, err
	}
	state, err := c.Metadata(ctx, "autoscaling/target-lifecycle-state")
	switch {
	case err == nil:
		state = strings.TrimSpace(state)
		if strings.HasSuffix(state, "Terminated") {
			return Notice{Kind: ASGTerminate, Action: state}, true, nil
		}
		return Notice{}, false, nil
	case errors.Is(err, ErrNotFound):
		return Notice{}, false, nil
	}
	return Notice{}, false, err
}

// parseSpot reads {"action": "terminate", "time": "2017-09-18T08:22:00Z"}.
// A notice that does not parse is still a notice.
func parseSpot(body string) Notice {
	n := Notice{Kind: SpotInterruption, Action: "unknown"}
	var v struct {
		Action string `json:"action"`
		Time   string `json:"time"`
	}
	if json.Unmarshal([]byte(body), &v) != nil {
		return n
	}
	if v.Action != "" {
		n.Action = v.Action
	}
	if t, err := time.Parse(time.RFC3339, v.Time); err == nil {
		n.Time = t
	}
	return n
}
