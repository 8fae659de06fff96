// Package api holds the wire types of the molecule control plane and the Go
// client the agent uses to talk to it. It is the one contract both sides
// import, so it depends on nothing heavy: no SQL driver, no server code.
package api

import (
	"time"
)

// Paths of the control-plane API.
const (
	PathRegister      = "/v1/register"
	PathHeartbeatFmt  = "/v1/hosts/%s/heartbeat"
	PathHealthz       = "/healthz"
	PathMetrics       = "/metrics"
	PathAdminHosts    = "/v1/admin/hosts"
	PathAdminInstance = "/v1/admin/instances"
	PathAdminTokens   = "/v1/admin/enrollment-tokens"
	PathAdminEvents   = "/v1/admin/events"
	PathAdminChannels = "/v1/admin/channels"
	PathAdminRollouts = "/v1/admin/rollouts"
	PathEvents        = "/v1/events"
)

// MaxBodyBytes caps every request body the control plane accepts.
const MaxBodyBytes = 256 << 10

// Host roles.
const (
	RoleTenant    = "tenant"
	RoleWorkspace = "workspace"
)

// Host statuses as reported by the admin API.
const (
	StatusOnline  = "online"
	StatusOffline = "offline"
	StatusRemoved = "removed"
)

// RegisterRequest is the body of POST /v1/register. Exactly one proof is
// given: the IMDSv2 instance identity PKCS#7 (on EC2) or an enrollment token
// (off EC2). Role, Org and Workspace are claims: for IMDS they must match what
// the provisioner declared for the instance, for enrollment what the token was
// issued for (empty claims take the declared values).
type RegisterRequest struct {
	// IdentityPKCS7 is the base64 PKCS#7 from
	// /latest/dynamic/instance-identity/pkcs7. The server reads the document
	// only from its signed content.
	IdentityPKCS7 string `json:"identity_pkcs7,omitempty"`
	// IdentityDocument is the plain document; optional, and when given it must
	// equal the signed content byte for byte.
	IdentityDocument string `json:"identity_document,omitempty"`
	// EnrollmentToken is the off-EC2 proof.
	EnrollmentToken string `json:"enrollment_token,omitempty"`
	// MachineID names the machine under enrollment (e.g. /etc/machine-id);
	// one registration per machine, like one per instance on EC2.
	MachineID string `json:"machine_id,omitempty"`
	// HostToken is the host's current token, presented when it registers
	// again after a reboot (a new boot ID).
	HostToken    string `json:"host_token,omitempty"`
	Role         string `json:"role,omitempty"`
	Org          string `json:"org,omitempty"`
	Workspace    string `json:"workspace,omitempty"`
	AgentVersion string `json:"agent_version"`
	BootID       string `json:"boot_id"`
	Hostname     string `json:"hostname,omitempty"`
}

// RegisterResponse is the reply to a successful registration. It is the only
// response that ever carries a host token.
type RegisterResponse struct {
	HostID     string `json:"host_id"`
	HostToken  string `json:"host_token"`
	IntervalMS int64  `json:"heartbeat_interval_ms"`
	Org        string `json:"org"`
	Role       string `json:"role"`
	Workspace  string `json:"workspace,omitempty"`
	Channel    string `json:"channel,omitempty"`
}

// Unit states reported in heartbeats.
const (
	UnitStarting = "starting"
	UnitRunning  = "running"
	UnitReady    = "ready"
	UnitBackoff  = "backoff"
	UnitFailed   = "failed"
	UnitStopped  = "stopped"
)

// UnitStatus is one unit's state in a heartbeat.
type UnitStatus struct {
	Name        string    `json:"name"`
	State       string    `json:"state"`
	Restarts    int       `json:"restarts"`
	Image       string    `json:"image,omitempty"`
	ImageDigest string    `json:"image_digest,omitempty"`
	Detail      string    `json:"detail,omitempty"`
	Since       time.Time `json:"since,omitzero"`
}

// TunnelStatus is the host's Cloudflare tunnel as the agent sees it.
type TunnelStatus struct {
	ID               string `json:"id"`
	ReadyConnections int    `json:"ready_connections"`
}

// BootStep is one step of the host's boot timeline.
type BootStep struct {
	Step string    `json:"step"`
	At   time.Time `json:"at"`
	// TookMS is how long the step ran, ending At; Detail says why it ended
	// without success (the agent carries on). Both optional.
	TookMS int64  `json:"took_ms,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// UpdateStatus reports progress of an image update on one unit.
type UpdateStatus struct {
	Unit   string `json:"unit"`
	Digest string `json:"digest"`
	Phase  string `json:"phase"` // pulling, replacing, verifying, committed, rolled_back
	Detail string `json:"detail,omitempty"`
}

// HeartbeatRequest is the body of POST /v1/hosts/{id}/heartbeat.
//
// Agents and control planes one version apart interoperate: a field added
// here is optional (omitempty, its zero value meaning "not reported"), so
// the previous agent's bodies stay valid; controlplane/server's
// compat_test.go posts them as literals.
type HeartbeatRequest struct {
	AgentVersion    string         `json:"agent_version"`
	BootID          string         `json:"boot_id"`
	Units           []UnitStatus   `json:"units"`
	Tunnel          *TunnelStatus  `json:"tunnel,omitempty"`
	Boot            []BootStep     `json:"boot,omitempty"`
	AppliedRevision int64          `json:"applied_revision"`
	Updates         []UpdateStatus `json:"updates,omitempty"`
	// Interruption is set once EC2 announced the instance is going away
	// (spot interruption or Auto Scaling termination); the agent has
	// stopped its units.
	Interruption string `json:"interruption,omitempty"`
}

// DesiredState is what the control plane wants the host to run.
type DesiredState struct {
	// Revision grows whenever the host's channel changes its images.
	Revision int64 `json:"revision"`
	// Images maps unit name to a pinned image reference (image@sha256:...).
	Images map[string]string `json:"images,omitempty"`
}

// Command is an instruction for the agent, carried in a heartbeat reply.
type Command struct {
	ID   string `json:"id"`
	Type string `json:"type"`
	Unit string `json:"unit,omitempty"`
}

// HeartbeatResponse is the reply to a heartbeat.
type HeartbeatResponse struct {
	IntervalMS int64        `json:"heartbeat_interval_ms"`
	Desired    DesiredState `json:"desired"`
	Commands   []Command    `json:"commands,omitempty"`
}

// Interval returns the heartbeat interval as a duration.
func (r HeartbeatResponse) Interval() time.Duration {
	return time.Duration(r.IntervalMS) * time.Millisecond
}

// Interval returns the heartbeat interval as a duration.
func (r RegisterResponse) Interval() time.Duration {
	return time.Duration(r.IntervalMS) * time.Millisecond
}

// Error is the body of every non-2xx response.
type Error struct {
	Error string `json:"error"`
	// Field names the offending request field for 400s, when there is one.
	Field string `json:"field,omitempty"`
}

// Declaration is what the provisioner declares about an expected EC2
// instance (PUT /v1/admin/instances/{instance_id}).
type Declaration struct {
	InstanceID string `json:"instance_id"`
	Org        string `json:"org"`
	Role       string `json:"role"`
	Workspace  string `json:"workspace,omitempty"`
	Channel    string `json:"channel,omitempty"`
}

// EnrollmentTokenRequest asks for a new enrollment token
// (POST /v1/admin/enrollment-tokens).
type EnrollmentTokenRequest struct {
	Org        string `json:"org"`
	Role       string `json:"role"`
	Workspace  string `json:"workspace,omitempty"`
	Channel    string `json:"channel,omitempty"`
	TTLSeconds int64  `json:"ttl_seconds,omitempty"`
	// Uses is how many hosts the token may register (default 1, at most
	// MaxEnrollmentUses). A re-registration presenting the host's token
	// uses none.
	Uses int64 `json:"uses,omitempty"`
	// MachineID, when set, binds the token to that one machine.
	MachineID string `json:"machine_id,omitempty"`
}

// MaxEnrollmentUses is the most uses one enrollment token can have.
const MaxEnrollmentUses = 1_000_000

// EnrollmentTokenResponse carries a new enrollment token, once.
type EnrollmentTokenResponse struct {
	ID        string    `json:"id"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	Uses      int64     `json:"uses"`
	MachineID string    `json:"machine_id,omitempty"`
}

// Host is a host as the admin API shows it.
type Host struct {
	ID           string            `json:"id"`
	InstanceKey  string            `json:"instance_key"`
	Org          string            `json:"org"`
	Role         string            `json:"role"`
	Workspace    string            `json:"workspace,omitempty"`
	Channel      string            `json:"channel,omitempty"`
	Status       string            `json:"status"`
	BootID       string            `json:"boot_id"`
	AgentVersion string            `json:"agent_version"`
	Hostname     string            `json:"hostname,omitempty"`
	TunnelID     string            `json:"tunnel_id,omitempty"`
	RegisteredAt time.Time         `json:"registered_at"`
	LastSeen     time.Time         `json:"last_seen"`
	Report       *HeartbeatRequest `json:"report,omitempty"`
}

// HostList is the reply to GET /v1/admin/hosts.
type HostList struct {
	Hosts []Host `json:"hosts"`
}

// DeprovisionResponse is the reply to POST /v1/admin/hosts/{id}/deprovision:
// the tunnel ID is what the caller must delete at Cloudflare.
type DeprovisionResponse struct {
	HostID   string `json:"host_id"`
	TunnelID string `json:"tunnel_id"`
	Status   string `json:"status"`
}

// Event is a host state transition.
type Event struct {
	ID     int64     `json:"id"`
	HostID string    `json:"host_id"`
	Type   string    `json:"type"`
	Detail string    `json:"detail,omitempty"`
	At     time.Time `json:"at"`
	// Count is how many times it happened (coalesced repeats), LastAt the
	// last time; both omitted for a single occurrence.
	Count  int64     `json:"count,omitempty"`
	LastAt time.Time `json:"last_at,omitzero"`
}

// EventList is the reply to GET /v1/admin/events.
type EventList struct {
	Events []Event `json:"events"`
}

// OrgTunnel records the Cloudflare tunnel the provisioner created for an
// org (PUT /v1/admin/orgs/{org}/tunnel). Heartbeats never change it; a
// deprovision hands it out for deletion.
type OrgTunnel struct {
	Org      string `json:"org"`
	TunnelID string `json:"tunnel_id"`
}

// PathAdminOrgs is the prefix of the per-org admin routes.
const PathAdminOrgs = "/v1/admin/orgs"

// ChannelImages sets the images of a channel (PUT /v1/admin/channels/{name}).
type ChannelImages struct {
	Images map[string]string `json:"images"`
}

// Event types recorded for host state transitions.
const (
	EventRegistered  = "registered"
	EventOnline      = "online"
	EventOffline     = "offline"
	EventDeprovision = "removed"
)

// FeedEvent is an event as the feed (GET /v1/events) serves it and
// webhooks receive it.
type FeedEvent struct {
	ID     int64     `json:"id"`
	Kind   string    `json:"kind"`
	HostID string    `json:"host_id,omitempty"`
	Detail string    `json:"detail,omitempty"`
	At     time.Time `json:"at"`
	// TunnelID is set on a deprovision event: the Cloudflare tunnel (and
	// its DNS record) the provisioner must delete.
	TunnelID string `json:"tunnel_id,omitempty"`
	// Count is how many times it happened when repeats were coalesced
	// (omitted for one), LastAt the last time.
	Count  int64     `json:"count,omitempty"`
	LastAt time.Time `json:"last_at,omitzero"`
}

// EventPage is the reply to GET /v1/events?since=&limit=.
type EventPage struct {
	Events []FeedEvent `json:"events"`
	// Next is the since to ask for the following page (the last ID
	// returned, or the since given when there was nothing new).
	Next int64 `json:"next"`
}
