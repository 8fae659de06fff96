package api

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
)

// Proof is how a host proves who it is when it registers: the IMDS PKCS#7
// (and optionally the plain document), or an enrollment token.
type Proof struct {
	IdentityPKCS7    string
	IdentityDocument string
	EnrollmentToken  secret.Secret
	// MachineID identifies the machine under enrollment.
	MachineID string
}

// Registration is a successful registration as the agent keeps it.
type Registration struct {
	HostID    string
	HostToken secret.Secret
	Interval  time.Duration
	Org       string
	Role      string
	Workspace string
	Channel   string
}

// Register registers the host. req carries the claims (role, org, workspace,
// agent version, boot ID); proof and current (the host's current token, zero
// if none) fill in the rest. Safe to retry: see "Retry policy".
func (c *Client) Register(ctx context.Context, proof Proof, current secret.Secret, req RegisterRequest) (Registration, error) {
	req.IdentityPKCS7 = proof.IdentityPKCS7
	req.IdentityDocument = proof.IdentityDocument
	req.EnrollmentToken = proof.EnrollmentToken.Reveal()
	req.MachineID = proof.MachineID
	req.HostToken = current.Reveal()
	var resp RegisterResponse
	if err := c.call(ctx, "register", http.MethodPost, PathRegister, true, secret.Secret{}, req, &resp); err != nil {
		return Registration{}, err
	}
	if resp.HostID == "" || resp.HostToken == "" {
		return Registration{}, fmt.Errorf("register: reply lacks host_id or host_token")
	}
	return Registration{
		HostID: resp.HostID, HostToken: secret.New(resp.HostToken), Interval: resp.Interval(),
		Org: resp.Org, Role: resp.Role, Workspace: resp.Workspace, Channel: resp.Channel,
	}, nil
}

// Heartbeat reports the host's state. errors.Is(err, ErrUnauthorized) means
// register again; errors.Is(err, ErrGone) means the host was deprovisioned.
func (c *Client) Heartbeat(ctx context.Context, hostID string, token secret.Secret, req HeartbeatRequest) (HeartbeatResponse, error) {
	var resp HeartbeatResponse
	req = ClampHeartbeat(req)
	path := fmt.Sprintf(PathHeartbeatFmt, url.PathEscape(hostID))
	err := c.call(ctx, "heartbeat", http.MethodPost, path, true, token, req, &resp)
	return resp, err
}

// Healthz checks that the control plane is up.
func (c *Client) Healthz(ctx context.Context) error {
	return c.call(ctx, "healthz", http.MethodGet, PathHealthz, true, secret.Secret{}, nil, nil)
}
