//go:build unix

// Package workspacetest holds the parts the workspace role's tests run
// against: a stand-in tenant platform enforcing the registry contract of
// molecule-core (interop §1) and a stand-in workspace runtime binary
// (standin-runtime) that registers and heartbeats like molecule-runtime.
package workspacetest

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"
)

// DefaultLivenessTTL is the tenant's Redis liveness TTL (ws:{id}).
const DefaultLivenessTTL = 180 * time.Second

// MaxTokens is the tenant's cap on live tokens per workspace.
const MaxTokens = 50

// OrgHeader is the header the tenant's TenantGuard requires on every route
// except /health, /metrics, /registry/register and /registry/heartbeat.
const OrgHeader = "X-Molecule-Org-Id"

// Request is one request the tenant received.
type Request struct {
	Method string
	Path   string
	Header http.Header
	Body   []byte
	Status int
}

type workspace struct {
	status     string
	url        string
	card       json.RawMessage
	tokens     map[string]bool // live tokens
	registers  int
	heartbeats int
	deleted    bool
	// liveUntil is the liveness key's expiry; zero: no key.
	liveUntil      time.Time
	lastRegistered time.Time // last accepted register
	lastHeartbeat  time.Time // last accepted heartbeat
	minted         int       // tokens minted by register
	uptime         int       // uptime_seconds of the last heartbeat
}

// Tenant is a stand-in tenant platform (workspace-server) speaking the real
// registry contract:
//
//   - POST /registry/register and /registry/heartbeat: with zero live tokens
//     for the workspace the request is allowed (and register mints one,
//     returned as auth_token); with one or more, a missing bearer is 401
//     {"error":"missing workspace auth token"} and a wrong one 401
//     {"error":"invalid workspace auth token"}.
//   - Every other route except /health: 404 unless X-Molecule-Org-Id matches
//     the org (TenantGuard); with an empty org the guard is off (self-hosted).
//   - GET /workspaces/{id}: {"id","status","uptime_seconds",...}; 404 once deleted.
//   - GET /workspaces/{id}/state (WorkspaceAuth): 401 unless the bearer is a
//     live token of the workspace, even with none live.
//   - POST /workspaces/{id}/notify (and any other /workspaces/{id}/... POST):
//     200 {"status":"ok"}, recorded, for proxy tests.
//   - A tokenless register of a removed workspace (its tokens were revoked)
//     answers 200 and mints a fresh token; the status stays removed.
//   - The registered URL is checked as validateAgentURL does: loopback,
//     link-local, TEST-NET, CGNAT and multicast are always refused, RFC 1918
//     only outside SaaS mode (SaaS: an org is set, or TenantOptions.SaaS);
//     a refused URL is 400 {"error":"invalid request body"}.
//   - Liveness: register sets a key living LivenessTTL; a heartbeat
//     extends it only while it lives; when it expires an online or degraded
//     workspace goes offline.
//
// See docs/platform-contract.md.
type Tenant struct {
	srv        *httptest.Server
	org        string
	saas       bool
	onRegister func(string)
	ttl        time.Duration
	now        func() time.Time

	mu   sync.Mutex
	ws   map[string]*workspace
	reqs []Request
}

// TenantOptions configure a stand-in tenant.
type TenantOptions struct {
	// Org is MOLECULE_ORG_ID: it turns on TenantGuard and SaaS mode.
	Org string
	// SelfHosted sets MOLECULE_DEPLOY_MODE=self-hosted: RFC 1918 runtime
	// URLs are refused even with an org.
	SelfHosted bool
	// LivenessTTL is DefaultLivenessTTL when 0 (shorter in tests).
	LivenessTTL time.Duration
	// OnRegister, when set, is called with the workspace ID by each
	// register request before it is handled (tests look at the runtime then).
	OnRegister func(id string)
}

// NewTenant starts a tenant for org (empty: no TenantGuard, not SaaS).
// Close it when done.
func NewTenant(org string) *Tenant { return NewTenantWith(TenantOptions{Org: org}) }

// NewTenantWith starts a tenant with o. Close it when done.
func NewTenantWith(o TenantOptions) *Tenant {
	if o.LivenessTTL <= 0 {
		o.LivenessTTL = DefaultLivenessTTL
	}
	t := &Tenant{org: o.Org, saas: o.Org != "" && !o.SelfHosted, ttl: o.LivenessTTL, now: time.Now,
		onRegister: o.OnRegister, ws: map[string]*workspace{}}
	t.srv = httptest.NewServer(http.HandlerFunc(t.serve))
	return t
}

// URL is the tenant's base URL (its PLATFORM_URL).
func (t *Tenant) URL() string { return t.srv.URL }

// Close stops the tenant.
func (t *Tenant) Close() { t.srv.Close() }

// AddWorkspace declares a workspace in status "provisioning" with no token.
func (t *Tenant) AddWorkspace(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ws[id] = &workspace{status: "provisioning", tokens: map[string]bool{}}
}

// IssueToken mints a live token for the workspace, as POST
// /workspaces/:id/tokens does: 32 random bytes, base64url, 43 characters.
// It returns "" at MaxTokens live tokens (the route answers 429).
func (t *Tenant) IssueToken(id string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	w := t.get(id)
	if len(w.tokens) >= MaxTokens {
		return ""
	}
	return t.mintLocked(w)
}

// Minted counts the tokens register minted for the workspace.
func (t *Tenant) Minted(id string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.get(id).minted
}

// LastRegistered is the time of the workspace's last accepted register.
func (t *Tenant) LastRegistered(id string) time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.get(id).lastRegistered
}

// Live reports whether the workspace's liveness key exists.
func (t *Tenant) Live(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	w := t.get(id)
	t.expireLocked(w)
	return !w.liveUntil.IsZero()
}

// RevokeTokens revokes every token of the workspace.
func (t *Tenant) RevokeTokens(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.get(id).tokens = map[string]bool{}
}

// Tokens returns the workspace's live tokens (for leak scans).
func (t *Tenant) Tokens(id string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for tok := range t.get(id).tokens {
		out = append(out, tok)
	}
	return out
}

// SetStatus sets the workspace's status ("offline", "removed", ...).
// "removed" also revokes its tokens, as DELETE /workspaces/:id does.
func (t *Tenant) SetStatus(id, status string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	w := t.get(id)
	w.status = status
	if status == "removed" {
		w.tokens = map[string]bool{}
	}
}

// Delete makes GET /workspaces/{id} answer 404 from now on.
func (t *Tenant) Delete(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	w := t.get(id)
	w.deleted, w.tokens = true, map[string]bool{}
}

// Status returns the workspace's status.
func (t *Tenant) Status(id string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	w := t.get(id)
	t.expireLocked(w)
	return w.status
}

// expireLocked applies the liveness key's expiry (registry/liveness.go):
// the key goes, and the workspace offline unless removed, paused or
// hibernated.
func (t *Tenant) expireLocked(w *workspace) {
	if w.liveUntil.IsZero() || t.now().Before(w.liveUntil) {
		return
	}
	w.liveUntil = time.Time{}
	switch w.status {
	case "removed", "paused", "hibernated":
	default:
		w.status = "offline"
	}
}

// Registrations counts register requests for the workspace that reached
// the handler, accepted or not.
func (t *Tenant) Registrations(id string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.get(id).registers
}

// Heartbeats counts accepted heartbeats for the workspace.
func (t *Tenant) Heartbeats(id string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.get(id).heartbeats
}

// Requests returns a copy of every request received so far.
func (t *Tenant) Requests() []Request {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Request, len(t.reqs))
	copy(out, t.reqs)
	return out
}

func (t *Tenant) get(id string) *workspace {
	w, ok := t.ws[id]
	if !ok {
		w = &workspace{status: "provisioning", tokens: map[string]bool{}}
		t.ws[id] = w
	}
	return w
}

func (t *Tenant) mintLocked(w *workspace) string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	tok := base64.RawURLEncoding.EncodeToString(b)
	w.tokens[tok] = true
	return tok
}

type recorder struct {
	http.ResponseWriter
	status int
}

func (r *recorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (t *Tenant) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	rec := &recorder{ResponseWriter: w, status: http.StatusOK}
	defer func() {
		t.mu.Lock()
		t.reqs = append(t.reqs, Request{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(),
			Body: body, Status: rec.status})
		t.mu.Unlock()
	}()
	switch {
	case r.URL.Path == "/health" && r.Method == http.MethodGet:
		writeJSON(rec, http.StatusOK, map[string]string{"status": "ok"})
		return
	case r.URL.Path == "/registry/register" && r.Method == http.MethodPost:
		t.register(rec, r, body)
		return
	case r.URL.Path == "/registry/heartbeat" && r.Method == http.MethodPost:
		t.heartbeat(rec, r, body)
		return
	}
	if t.org != "" && r.Header.Get(OrgHeader) != t.org {
		rec.WriteHeader(http.StatusNotFound) // TenantGuard: AbortWithStatus, no body
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/workspaces/")
	if !ok || rest == "" {
		writeJSON(rec, http.StatusNotFound, map[string]string{"error": "not found"})
		return
	}
	id, sub, _ := strings.Cut(rest, "/")
	t.mu.Lock()
	ws, known := t.ws[id]
	if !known || ws.deleted {
		t.mu.Unlock()
		writeJSON(rec, http.StatusNotFound, map[string]string{"error": "workspace not found"})
		return
	}
	t.expireLocked(ws)
	resp := map[string]any{"id": id, "name": id, "status": ws.status, "url": ws.url, "uptime_seconds": ws.uptime}
	t.mu.Unlock()
	switch {
	case sub == "" && r.Method == http.MethodGet:
		writeJSON(rec, http.StatusOK, resp)
	case sub == "state" && r.Method == http.MethodGet:
		// WorkspaceAuth: a bearer that is a live token of this workspace,
		// no bootstrap exception.
		t.mu.Lock()
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		valid := ok && tok != "" && ws.tokens[tok] && ws.status != "removed"
		t.mu.Unlock()
		switch {
		case !ok || tok == "":
			writeJSON(rec, http.StatusUnauthorized, map[string]string{"error": "missing workspace auth token"})
		case !valid:
			writeJSON(rec, http.StatusUnauthorized, map[string]string{"error": "invalid workspace auth token"})
		default:
			writeJSON(rec, http.StatusOK, map[string]any{"workspace_id": id, "status": resp["status"]})
		}
	case sub != "" && r.Method == http.MethodPost:
		writeJSON(rec, http.StatusOK, map[string]string{"status": "ok"})
	default:
		writeJSON(rec, http.StatusNotFound, map[string]string{"error": "not found"})
	}
}

// authorize applies requireWorkspaceToken; it reports whether to go on.
func (t *Tenant) authorizeLocked(w http.ResponseWriter, r *http.Request, ws *workspace) bool {
	if len(ws.tokens) == 0 {
		return true // bootstrap / grandfathered
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing workspace auth token"})
		return false
	}
	if !ws.tokens[tok] || ws.status == "removed" {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid workspace auth token"})
		return false
	}
	return true
}

func (t *Tenant) register(w http.ResponseWriter, r *http.Request, body []byte) {
	var p struct {
		ID        string          `json:"id"`
		URL       string          `json:"url"`
		AgentCard json.RawMessage `json:"agent_card"`
	}
	if err := json.Unmarshal(body, &p); err != nil || p.ID == "" || p.URL == "" || len(p.AgentCard) == 0 {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid request body"})
		return
	}
	if t.onRegister != nil {
		t.onRegister(p.ID)
	}
	if !t.urlAllowed(p.URL) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid request body"})
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	ws := t.get(p.ID)
	ws.registers++
	t.expireLocked(ws)
	if !t.authorizeLocked(w, r, ws) {
		return
	}
	resp := map[string]string{"status": "registered"}
	ws.liveUntil, ws.lastRegistered = t.now().Add(t.ttl), t.now()
	if ws.status != "removed" && !ws.deleted { // never resurrects a removed workspace
		ws.status, ws.url, ws.card = "online", p.URL, bytes.Clone(p.AgentCard)
	}
	// Minted whenever no live token exists, a removed workspace's included
	// (DELETE revoked its tokens).
	if len(ws.tokens) == 0 {
		resp["auth_token"] = t.mintLocked(ws)
		ws.minted++
	}
	writeJSON(w, http.StatusOK, resp)
}

func (t *Tenant) heartbeat(w http.ResponseWriter, r *http.Request, body []byte) {
	var p struct {
		WorkspaceID string `json:"workspace_id"`
		Uptime      int    `json:"uptime_seconds"`
	}
	if err := json.Unmarshal(body, &p); err != nil || p.WorkspaceID == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid request body"})
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	ws := t.get(p.WorkspaceID)
	if !t.authorizeLocked(w, r, ws) {
		return
	}
	t.expireLocked(ws)
	ws.heartbeats++
	ws.lastHeartbeat, ws.uptime = t.now(), p.Uptime
	if !ws.liveUntil.IsZero() { // EXPIRE: a no-op once the key is gone
		ws.liveUntil = t.now().Add(t.ttl)
	}
	if ws.status == "offline" || ws.status == "provisioning" {
		ws.status = "online"
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// urlAllowed is validateAgentURL (registry.go).
func (t *Tenant) urlAllowed(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return false
	}
	blocked := []string{"169.254.0.0/16", "127.0.0.0/8", "fe80::/10", "::1/128", "192.0.2.0/24",
		"198.51.100.0/24", "203.0.113.0/24", "100.64.0.0/10", "224.0.0.0/4", "fc00::/8", "2001:db8::/32"}
	if !t.saas {
		blocked = append(blocked, "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fd00::/8")
	}
	ok := func(a netip.Addr) bool {
		for _, c := range blocked {
			if netip.MustParsePrefix(c).Contains(a.Unmap()) {
				return false
			}
		}
		return true
	}
	host := u.Hostname()
	if a, err := netip.ParseAddr(host); err == nil {
		return ok(a)
	}
	if host == "localhost" {
		return true
	}
	ips, err := net.LookupIP(host)
	if err != nil {
		return false
	}
	for _, ip := range ips {
		if a, _ := netip.AddrFromSlice(ip); !ok(a) {
			return false
		}
	}
	return true
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
