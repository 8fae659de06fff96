// Package store keeps the control plane's durable state — declared
// instances, enrollment tokens, hosts, events and channel images — in SQLite
// (pure Go, WAL) or PostgreSQL. Migrations are embedded and run by goose at
// Open. Tokens are stored only as SHA-256 hashes.
package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"time"
)

// Errors returned by Store methods; match with errors.Is.
var (
	ErrNotFound = errors.New("not found")
	// ErrConflict: the instance is registered by another boot and the
	// request did not present the host's current token.
	ErrConflict = errors.New("instance already registered by another boot")
	// ErrRemoved: the host was deprovisioned.
	ErrRemoved = errors.New("host deprovisioned")
	// ErrForeign: the instance is registered to another org, role or
	// workspace than the proof is for. No proof re-binds it.
	ErrForeign = errors.New("instance registered to another org, role or workspace")
	// ErrTokenUsed: the enrollment token has no use left.
	ErrTokenUsed = errors.New("enrollment token already used")
)

// Host statuses stored in hosts.status.
const (
	StatusOnline  = "online"
	StatusOffline = "offline"
	StatusRemoved = "removed"
)

// Declaration is an expected EC2 instance, declared by the provisioner.
type Declaration struct {
	InstanceID, Org, Role, Workspace, Channel string
	CreatedAt                                 time.Time
}

// EnrollmentToken is an off-EC2 enrollment token; only its hash is kept.
// It registers at most MaxUses new hosts (0: any number) and, when
// MachineID is set, only that machine.
type EnrollmentToken struct {
	ID, Hash, Org, Role, Workspace, Channel string
	MachineID                               string
	MaxUses, Uses                           int64
	ExpiresAt, CreatedAt                    time.Time
}

// Host is a registered host.
type Host struct {
	ID, InstanceKey, Org, Role, Workspace, Channel string
	Status, BootID, AgentVersion, Hostname         string
	// TunnelID is the org's recorded tunnel when the host reported it
	// (see BindTunnel); ReportedTunnelID is what the host last reported.
	TunnelID, ReportedTunnelID string
	TokenHash                  string
	// EnrollmentTokenID is the enrollment token that created the host.
	EnrollmentTokenID string
	// Report is the last heartbeat body that changed something (JSON).
	Report                            string
	RegisteredAt, LastSeen, UpdatedAt time.Time
}

// HostFilter selects hosts; empty fields match all.
type HostFilter struct {
	Org, Role, Workspace, Channel, Status string
}

// Event is a host state transition.
type Event struct {
	ID           int64
	HostID, Type string
	Detail       string
	At           time.Time
	// Subject, when set, makes repeats coalesce: an event of the same
	// host, type and subject within the coalescing window bumps the stored
	// one's Count and LastAt (and takes its Detail) instead of adding a row.
	Subject string
	// Count is how many times the event happened (1 unless coalesced);
	// LastAt is the last time.
	Count  int64
	LastAt time.Time
}

// Registration is one attempt to register an instance.
type Registration struct {
	// InstanceKey is "ec2:<instance id>" or "enroll:<machine id>".
	InstanceKey string
	// NewHostID is used when the instance has no host yet.
	NewHostID                      string
	Org, Role, Workspace, Channel  string
	BootID, AgentVersion, Hostname string
	NewTokenHash                   string
	// PresentedTokenHash is the hash of the token the host presented, or "".
	PresentedTokenHash string
	// EnrollmentTokenID is the enrollment token presented ("" for IMDS): a
	// new host uses one of its uses.
	EnrollmentTokenID string
	// Attested: the proof is a fresh IMDS attestation of this instance, so
	// a retry of the same boot may re-bind the host without its token.
	Attested bool
	Now      time.Time
}

// LiveUpdate is what one flush writes for one host.
type LiveUpdate struct {
	HostID   string
	LastSeen time.Time
	// Status, when not empty, is the host's new status.
	Status string
	// Report, when not empty, replaces the stored report, TunnelID and
	// AgentVersion with it.
	Report       string
	TunnelID     string
	AgentVersion string
}

// Channel is a release channel's pinned images.
type Channel struct {
	Name     string
	Revision int64
	Images   map[string]string
}

// Stats counts what the store did.
type Stats struct {
	// WriteTx is the number of committed write transactions.
	WriteTx uint64
}

// Store is the control plane's durable state.
type Store interface {
	PutDeclaration(ctx context.Context, d Declaration) error
	GetDeclaration(ctx context.Context, instanceID string) (Declaration, error)
	CreateEnrollmentToken(ctx context.Context, t EnrollmentToken) error
	EnrollmentTokenByHash(ctx context.Context, hash string) (EnrollmentToken, error)
	// Register creates the instance's host, or re-binds it (rotating the
	// token) when the presented token is current, or when the boot is the
	// same and the proof is a fresh attestation or the enrollment token
	// that created the host. It refuses a host of another org, role or
	// workspace (ErrForeign), any other re-registration (ErrConflict), a
	// used-up enrollment token (ErrTokenUsed) and a deprovisioned host
	// (ErrRemoved). It records a "registered" event; a refusal changes
	// nothing but records a "register_refused" audit event.
	Register(ctx context.Context, r Registration) (h Host, created bool, err error)
	// Audit records one event outside any other write (a refusal).
	Audit(ctx context.Context, e Event) error
	GetHost(ctx context.Context, id string) (Host, error)
	ListHosts(ctx context.Context, f HostFilter) ([]Host, error)
	// Flush writes a flush window's live state and events in one
	// transaction. It never changes a removed host.
	Flush(ctx context.Context, updates []LiveUpdate, events []Event) error
	// Deprovision marks the host removed (idempotent) and returns it. A
	// non-empty tunnelID is the live report (it may be newer than the last
	// flush); it is checked like a flushed one. The host's TunnelID, and the
	// removed event, carry only the org's recorded tunnel, which is then
	// released so the org's next host can bind a new one.
	Deprovision(ctx context.Context, id, tunnelID string, now time.Time) (Host, error)
	Tunnels
	EventLog
	// WriteHealth reports whether storage writes fail: the last storage
	// fault (disk full, read-only, connection lost) when no write has
	// succeeded since, else nil.
	WriteHealth() error
	// Probe makes one small write, to learn whether writes work.
	Probe(ctx context.Context, now time.Time) error
	Throttle
	Events(ctx context.Context, hostID string, limit int) ([]Event, error)
	SetChannelImages(ctx context.Context, name string, images map[string]string) (Channel, error)
	Channels(ctx context.Context) ([]Channel, error)
	FleetOps
	Stats() Stats
	Close() error
}

// HashToken returns the hex SHA-256 of a token, the only form stored.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}
