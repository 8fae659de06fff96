//go:build unix

package workspace

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/supervisor"
)

// Registration states reported by the Checker.
const (
	Registered    = "registered"
	NotRegistered = "not_registered"
	Removed       = "removed"
	// TokenRejected: the tenant rejects the runtime's token (its register
	// got 401) and recovery did not help.
	TokenRejected = "token_rejected"
)

// Token recovery outcomes reported by the Checker.
const (
	RecoveryRestarted = "restarted" // token refreshed and runtime restarted once
	RecoveryRecovered = "recovered" // ...and it registered afterwards
	RecoveryFailed    = "failed"    // the tenant still rejects it; no more restarts
)

// Checker defaults.
const (
	DefaultCheckInterval   = 5 * time.Second
	DefaultSteadyInterval  = 30 * time.Second
	DefaultRegisterTimeout = 2 * time.Minute
	checkTimeout           = 10 * time.Second
	// removedAfter404s is how many 404s in a row, after the workspace was
	// once found, mean it was deleted.
	removedAfter404s = 2
)

// CheckerOptions configure a Checker. Callbacks are called from Run's goroutine.
type CheckerOptions struct {
	// TenantURL is the tenant platform's base URL (not the proxy).
	TenantURL   string
	WorkspaceID string
	// OrgID is sent as X-Molecule-Org-Id (TenantGuard); empty sends none.
	OrgID  string
	Client *http.Client
	// Interval is the poll period until registered; SteadyInterval after.
	Interval       time.Duration
	SteadyInterval time.Duration
	// RegisterTimeout: a runtime that has neither reported its register
	// result nor shown up online this long after its start is treated like
	// one whose register got 401.
	RegisterTimeout time.Duration
	Log             *slog.Logger
	// RefreshToken fetches the secrets again (secrets.Store.Refresh) and says
	// whether the workspace token changed. It must not restart anything.
	RefreshToken func(ctx context.Context) (changed bool, err error)
	// Restart restarts the runtime unit (supervisor.Restart).
	Restart func(ctx context.Context, reason string) error
	// Stop stops the runtime unit for good (supervisor.StopUnits).
	Stop func()
	// TokenLocation names where the token lives, for messages (no value).
	TokenLocation string
	// TokenFile, when set, is the runtime's .auth_token: each check asks
	// the tenant whether it still accepts it (GET /workspaces/{id}/state,
	// WorkspaceAuth), since the runtime's heartbeat 401s are silent and a
	// revoked token would otherwise look online for the 180 s liveness TTL.
	TokenFile string
	// NoSourceToken reports token flow (b): the secret source holds no
	// token. Recovery from a rejected token is then one restart, whose
	// register mints a fresh token if none is live.
	NoSourceToken func() bool
	// State, when set, persists the removal (before the runtime is
	// stopped, so an agent restart never starts it again) and bounds the
	// token-recovery restarts across agent restarts.
	State *State
}

// Status is the Checker's view of the workspace's registration. It holds no
// secret.
type Status struct {
	Registration    string    `json:"registration"`
	WorkspaceStatus string    `json:"workspace_status,omitempty"`
	HTTPStatus      int       `json:"http_status,omitempty"`     // last GET /workspaces/{id}
	RegisterStatus  int       `json:"register_status,omitempty"` // runtime's register answer, from its output
	TokenRecovery   string    `json:"token_recovery,omitempty"`
	Detail          string    `json:"detail,omitempty"`
	LastCheck       time.Time `json:"last_check,omitzero"`
	Checks          int       `json:"checks"`
	// LastRegister is when the agent last saw a register of its own start
	// accepted (this agent run or, from State, an earlier one).
	LastRegister time.Time `json:"last_register,omitzero"`
	// UptimeSeconds is the tenant's uptime_seconds, from the last heartbeat.
	UptimeSeconds int `json:"uptime_seconds,omitempty"`
}

// Checker polls the tenant's GET /workspaces/{id} until the workspace is
// online, and acts on what the runtime cannot fix itself:
//
//   - register answered 401 (stale token): the runtime registers once and
//     never re-reads its token, so the Checker refreshes the secrets and, if
//     the token changed, restarts the runtime once; if the tenant still
//     rejects it, or the token did not change, it reports token_recovery
//     "failed" and restarts nothing until a registration succeeds again;
//   - status "removed", or 404 after the workspace was once found: it stops
//     the runtime for good.
//
// It learns the register answer from the runtime's own output (ObserveLine
// on every line; molecule-runtime prints "Registered with platform: <code>"
// and httpx logs the POST): a restarted runtime may look online for up to
// 180 s on its predecessor's liveness key, so the tenant's status alone
// cannot tell a rejected register. Without output the RegisterTimeout
// fallback applies.
type Checker struct {
	o    CheckerOptions
	url  string
	log  *slog.Logger
	wake chan struct{}
	now  func() time.Time

	mu        sync.Mutex
	st        Status
	runStart  time.Time
	runCode   int  // register answer of the current run (0: unknown)
	stale     bool // a stale-token signal waits for the loop
	timedOut  bool // the RegisterTimeout fallback fired for this run
	attempted bool // a recovery was made since the last registration
	// staleDetail explains the last stale-token handling until a registration.
	staleDetail string
	seenFound   bool
	// confirmed: a check found the workspace on the tenant, not removed.
	confirmed bool
	// tokenRejected: the last token probe answered 401.
	tokenRejected bool
	notFound      int
	removed       bool
	lastLogged    string
}

// NewChecker checks the options and returns a Checker; nothing runs until Run.
func NewChecker(o CheckerOptions) (*Checker, error) {
	u, err := url.Parse(o.TenantURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("tenant url %q: want http(s)://host[:port]", o.TenantURL)
	}
	if o.WorkspaceID == "" {
		return nil, errors.New("workspace id: required")
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: checkTimeout}
	}
	if o.Interval <= 0 {
		o.Interval = DefaultCheckInterval
	}
	if o.SteadyInterval <= 0 {
		o.SteadyInterval = DefaultSteadyInterval
	}
	if o.RegisterTimeout <= 0 {
		o.RegisterTimeout = DefaultRegisterTimeout
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.TokenLocation == "" {
		o.TokenLocation = "the secrets source"
	}
	c := &Checker{o: o, url: u.JoinPath("workspaces", o.WorkspaceID).String(), log: o.Log,
		wake: make(chan struct{}, 1), now: time.Now,
		st: Status{Registration: NotRegistered, Detail: "runtime not started yet"}}
	if o.State != nil {
		ps := o.State.Get()
		c.st.LastRegister = ps.LastRegistered
		if ps.Removed {
			c.removed = true
			c.st.Registration = Removed
			c.st.Detail = "workspace removed on the tenant (recorded " + ps.RemovedAt.UTC().Format(time.RFC3339) +
				"); the runtime never starts again on this host"
		}
	}
	return c, nil
}

// Confirmed reports whether a check found the workspace on the tenant and
// not removed: before that, a runtime without a token must not start, since
// a tokenless register of a removed workspace mints it a fresh token.
func (c *Checker) Confirmed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.confirmed && !c.removed
}

var (
	reRegistered = regexp.MustCompile(`Registered with platform: ([1-5]\d\d)\b`)
	reHTTPX      = regexp.MustCompile(`POST \S*/registry/register "HTTP/[0-9.]+ ([1-5]\d\d)\b`)
)

// RegisterResult finds the register answer in one line of runtime output.
func RegisterResult(line []byte) (code int, ok bool) {
	for _, re := range []*regexp.Regexp{reRegistered, reHTTPX} {
		if m := re.FindSubmatch(line); m != nil {
			c, err := strconv.Atoi(string(m[1]))
			return c, err == nil
		}
	}
	return 0, false
}

// ObserveLine takes one line of the runtime's output (Sink's callback).
func (c *Checker) ObserveLine(line []byte) {
	code, ok := RegisterResult(line)
	if !ok {
		return
	}
	c.mu.Lock()
	c.runCode, c.st.RegisterStatus = code, code
	if code == http.StatusUnauthorized {
		c.stale = true
	}
	c.mu.Unlock()
	c.poke()
}

// Starting tells the Checker a new runtime process is about to start
// (call it from the unit's Prepare).
func (c *Checker) Starting() {
	c.mu.Lock()
	c.runStart, c.runCode, c.timedOut = c.now(), 0, false
	c.st.RegisterStatus = 0
	c.mu.Unlock()
	c.poke()
}

// IsRemoved reports whether the workspace was found removed.
func (c *Checker) IsRemoved() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.removed
}

func (c *Checker) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Status returns the current status.
func (c *Checker) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st
}

// Report is the runtime unit's supervisor.Reporter: its workspace facet.
func (c *Checker) Report(f *supervisor.Facets) {
	st := c.Status()
	f.Workspace = &supervisor.WorkspaceFacet{Registration: st.Registration, PlatformStatus: st.WorkspaceStatus,
		HTTPStatus: st.HTTPStatus, RegisterStatus: st.RegisterStatus, TokenRecovery: st.TokenRecovery,
		LastRegister: st.LastRegister, Detail: st.Detail}
}

// Run polls until ctx ends or the workspace is found removed. A removal
// recorded by an earlier agent run stops the runtime at once.
func (c *Checker) Run(ctx context.Context) {
	if c.IsRemoved() {
		c.log.Warn("workspace was removed on the tenant (recorded in the agent's state): the runtime stays stopped")
		if c.o.Stop != nil {
			c.o.Stop()
		}
		return
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.wake:
		}
		c.check(ctx)
		if c.takeStale() {
			c.recover(ctx)
		}
		if c.IsRemoved() {
			return
		}
		next := c.o.Interval
		if c.Status().Registration == Registered {
			next = c.o.SteadyInterval
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(next)
	}
}

func (c *Checker) takeStale() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stale
	c.stale = false
	return s
}
