package api

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
)

// HostFilter selects hosts in ListHosts; empty fields match everything.
type HostFilter struct {
	Org, Role, Workspace, Channel, Status string
}

func (f HostFilter) query() string {
	v := url.Values{}
	for k, s := range map[string]string{"org": f.Org, "role": f.Role, "workspace": f.Workspace, "channel": f.Channel, "status": f.Status} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if len(v) == 0 {
		return ""
	}
	return "?" + v.Encode()
}

// DeclareInstance declares an expected EC2 instance (admin).
func (c *Client) DeclareInstance(ctx context.Context, d Declaration) error {
	return c.call(ctx, "declare instance", http.MethodPut, PathAdminInstance+"/"+url.PathEscape(d.InstanceID), true, c.admin, d, nil)
}

// CreateEnrollmentToken issues an enrollment token (admin). Not idempotent:
// retried only when the server cannot have acted on the request.
func (c *Client) CreateEnrollmentToken(ctx context.Context, r EnrollmentTokenRequest) (EnrollmentTokenResponse, error) {
	var out EnrollmentTokenResponse
	err := c.call(ctx, "create enrollment token", http.MethodPost, PathAdminTokens, false, c.admin, r, &out)
	return out, err
}

// BindOrgTunnel records the tunnel provisioned for an org (admin).
func (c *Client) BindOrgTunnel(ctx context.Context, t OrgTunnel) error {
	return c.call(ctx, "bind org tunnel", http.MethodPut, PathAdminOrgs+"/"+url.PathEscape(t.Org)+"/tunnel", true, c.admin, t, nil)
}

// ListHosts lists hosts matching f (admin).
func (c *Client) ListHosts(ctx context.Context, f HostFilter) ([]Host, error) {
	var out HostList
	err := c.call(ctx, "list hosts", http.MethodGet, PathAdminHosts+f.query(), true, c.admin, nil, &out)
	return out.Hosts, err
}

// GetHost returns one host (admin).
func (c *Client) GetHost(ctx context.Context, id string) (Host, error) {
	var out Host
	err := c.call(ctx, "get host", http.MethodGet, PathAdminHosts+"/"+url.PathEscape(id), true, c.admin, nil, &out)
	return out, err
}

// Deprovision marks a host removed and returns its tunnel ID (admin).
// Idempotent: a second call returns the same reply.
func (c *Client) Deprovision(ctx context.Context, id string) (DeprovisionResponse, error) {
	var out DeprovisionResponse
	err := c.call(ctx, "deprovision host", http.MethodPost, PathAdminHosts+"/"+url.PathEscape(id)+"/deprovision", true, c.admin, nil, &out)
	return out, err
}

// Events lists state transitions, newest last; hostID may be empty (admin).
func (c *Client) Events(ctx context.Context, hostID string) ([]Event, error) {
	var out EventList
	path := PathAdminEvents
	if hostID != "" {
		path += "?host=" + url.QueryEscape(hostID)
	}
	err := c.call(ctx, "list events", http.MethodGet, path, true, c.admin, nil, &out)
	return out.Events, err
}

// SetChannelImages pins the images of a channel (admin).
func (c *Client) SetChannelImages(ctx context.Context, channel string, images map[string]string) error {
	return c.call(ctx, "set channel images", http.MethodPut, PathAdminChannels+"/"+url.PathEscape(channel), true, c.admin, ChannelImages{Images: images}, nil)
}

// StartRollout sets new images on a channel and starts rolling them out
// (admin). Not idempotent (a second call supersedes the first rollout):
// retried only when the server cannot have acted on the request.
func (c *Client) StartRollout(ctx context.Context, channel string, r RolloutRequest) (Rollout, error) {
	var out Rollout
	err := c.call(ctx, "start rollout", http.MethodPost, PathAdminChannels+"/"+url.PathEscape(channel)+"/rollouts", false, c.admin, r, &out)
	return out, err
}

// GetRollout returns the channel's latest rollout (admin).
func (c *Client) GetRollout(ctx context.Context, channel string) (Rollout, error) {
	var out Rollout
	err := c.call(ctx, "get rollout", http.MethodGet, PathAdminChannels+"/"+url.PathEscape(channel)+"/rollout", true, c.admin, nil, &out)
	return out, err
}

// ListRollouts returns every channel's latest rollout (admin).
func (c *Client) ListRollouts(ctx context.Context) ([]Rollout, error) {
	var out RolloutList
	err := c.call(ctx, "list rollouts", http.MethodGet, PathAdminRollouts, true, c.admin, nil, &out)
	return out.Rollouts, err
}

// Rollout actions.
const (
	RolloutPause    = "pause"
	RolloutResume   = "resume"
	RolloutRollback = "rollback"
)

// ChangeRollout pauses, resumes or rolls back the channel's rollout
// (admin). Idempotent in effect: a repeated action answers 409 (the rollout
// is already in that state) and changes nothing.
func (c *Client) ChangeRollout(ctx context.Context, channel, action, reason string) (Rollout, error) {
	var out Rollout
	path := PathAdminChannels + "/" + url.PathEscape(channel) + "/rollout/" + url.PathEscape(action)
	err := c.call(ctx, action+" rollout", http.MethodPost, path, true, c.admin, RolloutAction{Reason: reason}, &out)
	return out, err
}

// EventFeed returns up to limit events after the event ID since (admin).
func (c *Client) EventFeed(ctx context.Context, since int64, limit int) (EventPage, error) {
	var out EventPage
	path := PathEvents + "?since=" + strconv.FormatInt(since, 10) + "&limit=" + strconv.Itoa(limit)
	err := c.call(ctx, "event feed", http.MethodGet, path, true, c.admin, nil, &out)
	return out, err
}
