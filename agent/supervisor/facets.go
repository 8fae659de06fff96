//go:build unix

package supervisor

import "time"

// Facets are what a unit's parts know about its workload beyond its state,
// typed per kind of workload. A unit has at most the facets its parts
// report; none of them holds a secret.
type Facets struct {
	Container *ContainerFacet `json:"container,omitempty"`
	Tunnel    *TunnelFacet    `json:"tunnel,omitempty"`
	Workspace *WorkspaceFacet `json:"workspace,omitempty"`
}

// ContainerFacet is a container unit's image and its image update.
type ContainerFacet struct {
	// Image is the reference the unit runs; Digest its sha256 pin, if any.
	Image  string `json:"image"`
	Digest string `json:"digest,omitempty"`
	// Update is the last or current image update; nil when none ran.
	Update *UpdateFacet `json:"update,omitempty"`
}

// UpdateFacet is where an image update is.
type UpdateFacet struct {
	Phase  string `json:"phase"`
	To     string `json:"to"`
	Reason string `json:"reason,omitempty"`
	// PullBytes and PullTotal are the pull's progress while it pulls.
	PullBytes int64 `json:"pull_bytes,omitempty"`
	PullTotal int64 `json:"pull_total,omitempty"`
}

// TunnelFacet is the cloudflared tunnel a unit serves.
type TunnelFacet struct {
	// ID is the tunnel's ID (from its token).
	ID string `json:"id,omitempty"`
	// ConnectorID and ReadyConnections come from the last /ready answer.
	ConnectorID      string `json:"connector_id,omitempty"`
	ReadyConnections int    `json:"ready_connections"`
}

// WorkspaceFacet is the workspace runtime's standing with its tenant platform.
type WorkspaceFacet struct {
	// Registration is the checker's verdict (registered, unregistered, ...).
	Registration string `json:"registration"`
	// PlatformStatus is the workspace's status on the platform.
	PlatformStatus string `json:"platform_status,omitempty"`
	// HTTPStatus is the platform's last answer to the registration check;
	// RegisterStatus the runtime's last register call's.
	HTTPStatus     int    `json:"http_status,omitempty"`
	RegisterStatus int    `json:"register_status,omitempty"`
	TokenRecovery  string `json:"token_recovery,omitempty"`
	// LastRegister is when the checker last saw this start's register.
	LastRegister time.Time `json:"last_register,omitzero"`
	Detail       string    `json:"detail,omitempty"`
}

// Reporter fills in the facets it knows of a unit's status. The parts that
// build a Spec list theirs in Spec.Reporters; the supervisor calls each one
// whenever the status is read.
type Reporter func(f *Facets)
