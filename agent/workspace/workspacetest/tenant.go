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
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
)

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
//   - GET /workspaces/{id}: {"id","status",...}; 404 once deleted.
//   - POST /workspaces/{id}/notify (and any other /workspaces/{id}/... POST):
//     200 {"status":"ok"}, recorded, for proxy tests.
//
// It does not apply the SSRF checks on the registered URL (tests register
// loopback URLs, which the real tenant refuses).
type Tenant struct {
	srv *httptest.Server
	org string

	mu   sync.Mutex
	ws   map[string]*workspace
	reqs []Request
}

// NewTenant starts a tenant for org (empty: no TenantGuard). Close it when done.
func NewTenant(org string) *Tenant {
	t := &Tenant{org: org, ws: map[string]*workspace{}}
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
func (t *Tenant) IssueToken(id string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.mintLocked(t.get(id))
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
	return t.get(id).status
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
		writeJSON(rec, http.StatusNotFound, map[string]string{"error": "not found"})
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
	resp := map[string]any{"id": id, "name": id, "status": ws.status, "url": ws.url}
	t.mu.Unlock()
	switch {
	case sub == "" && r.Method == http.MethodGet:
		writeJSON(rec, http.StatusOK, resp)
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
	if u, err := url.Parse(p.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid request body"})
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	ws := t.get(p.ID)
	ws.registers++
	if !t.authorizeLocked(w, r, ws) {
		return
	}
	resp := map[string]string{"status": "registered"}
	if ws.status == "removed" || ws.deleted {
		writeJSON(w, http.StatusOK, resp) // never resurrects a removed workspace
		return
	}
	ws.status, ws.url, ws.card = "online", p.URL, bytes.Clone(p.AgentCard)
	if len(ws.tokens) == 0 {
		resp["auth_token"] = t.mintLocked(ws)
	}
	writeJSON(w, http.StatusOK, resp)
}

func (t *Tenant) heartbeat(w http.ResponseWriter, r *http.Request, body []byte) {
	var p struct {
		WorkspaceID string `json:"workspace_id"`
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
	ws.heartbeats++
	if ws.status == "offline" || ws.status == "provisioning" {
		ws.status = "online"
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
