// Package cftest is a Cloudflare API double that speaks the real v4 wire
// protocol: JSON under /client/v4 with the {success, errors, messages,
// result} envelope, bearer-token auth, page/per_page paging. Tests drive it
// with the real github.com/cloudflare/cloudflare-go/v6 client through
// option.WithBaseURL(s.URL) and option.WithAPIToken(cftest.Token).
//
// It serves what a provisioner needs: Cloudflare Tunnels (create with a
// secret, list by name, get, delete, configuration get/put, connections
// get/delete, token) and a zone's DNS records (create, list, get, update,
// patch, delete), with Cloudflare's awkward parts: deleted tunnels are still
// listed unless is_deleted=false, a tunnel with live connections cannot be
// deleted, a CNAME cannot share its name with another A/AAAA/CNAME, names
// are made fully qualified, the last ingress rule must be a catch-all. It
// injects 429 rate limits (with Retry-After), 5xx and 403 per operation.
package cftest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Fixed identities of the fake account.
const (
	// Token is the API token the server accepts as a bearer.
	Token = "cftest-api-token-0123456789abcdef0123456789"
	// AccountID is the account that owns the tunnels.
	AccountID = "0123456789abcdef0123456789abcdef"
	// AccountTag is the account tag in tunnel tokens (the account ID, as on Cloudflare).
	AccountTag = AccountID
	// ZoneID is the zone that holds the DNS records.
	ZoneID = "fedcba9876543210fedcba9876543210"
	// ZoneName is the zone's domain.
	ZoneName = "molecule.test"
)

// Operations, for Fail and Request.Op.
const (
	OpCreateTunnel      = "tunnels.create"
	OpListTunnels       = "tunnels.list"
	OpGetTunnel         = "tunnels.get"
	OpDeleteTunnel      = "tunnels.delete"
	OpGetConfig         = "tunnels.config.get"
	OpPutConfig         = "tunnels.config.put"
	OpGetConnections    = "tunnels.connections.get"
	OpDeleteConnections = "tunnels.connections.delete"
	OpGetToken          = "tunnels.token"
	OpCreateRecord      = "dns.create"
	OpListRecords       = "dns.list"
	OpGetRecord         = "dns.get"
	OpUpdateRecord      = "dns.update"
	OpEditRecord        = "dns.edit"
	OpDeleteRecord      = "dns.delete"
)

// Fault is an error answer injected for an operation.
type Fault int

// Faults.
const (
	// RateLimited answers 429 with code 971 and Retry-After: 1.
	RateLimited Fault = iota + 1
	// ServerError answers 500 with code 10001.
	ServerError
	// BadGateway answers 502 with an HTML body, as Cloudflare's edge does.
	BadGateway
	// Forbidden answers 403 with code 10000 (Authentication error), as a
	// token without the permission gets.
	Forbidden
	// LostAnswer carries the operation out, then answers 500, as when the
	// answer never reached the caller.
	LostAnswer
)

// Request records one request, for assertions. It never holds a body.
type Request struct {
	Op     string
	Method string
	Path   string
	Status int
	// Codes are the error codes answered, empty on success.
	Codes []int
}

// Server is a running fake Cloudflare API. Its methods are safe for concurrent use.
type Server struct {
	// URL is the API base to give option.WithBaseURL (ends in /client/v4/).
	URL string

	srv *httptest.Server

	mu       sync.Mutex
	tunnels  map[string]*tunnel
	records  map[string]*record
	faults   map[string][]Fault
	requests []Request
	now      func() time.Time
}

// New starts a server and stops it when tb's test ends.
func New(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{
		tunnels: map[string]*tunnel{},
		records: map[string]*record{},
		faults:  map[string][]Fault{},
		now:     time.Now,
	}
	mux := http.NewServeMux()
	s.routes(mux)
	s.srv = httptest.NewServer(mux)
	s.URL = s.srv.URL + "/client/v4/"
	tb.Cleanup(s.Close)
	return s
}

// Close stops the server and closes its connections.
func (s *Server) Close() {
	s.srv.CloseClientConnections()
	s.srv.Close()
}

// Fail makes the next calls of op answer with the faults, in order (op ""
// matches every operation).
func (s *Server) Fail(op string, faults ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[op] = append(s.faults[op], faults...)
}

// Requests returns a copy of every request received so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Count returns how many requests of op ("" for any) answered status.
func (s *Server) Count(op string, status int) int {
	n := 0
	for _, r := range s.Requests() {
		if (op == "" || r.Op == op) && r.Status == status {
			n++
		}
	}
	return n
}

// apiError is one entry of the envelope's errors.
type apiError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// failure is an error answer.
type failure struct {
	status int
	errs   []apiError
}

func fail(status, code int, msg string) *failure {
	return &failure{status, []apiError{{code, msg}}}
}

func notFound(code int, msg string) *failure { return fail(http.StatusNotFound, code, msg) }

func badRequest(code int, msg string) *failure { return fail(http.StatusBadRequest, code, msg) }

// envelope is every JSON answer.
type envelope struct {
	Success    bool       `json:"success"`
	Errors     []apiError `json:"errors"`
	Messages   []apiError `json:"messages"`
	Result     any        `json:"result"`
	ResultInfo *pageInfo  `json:"result_info,omitempty"`
}

type pageInfo struct {
	Page       int `json:"page"`
	PerPage    int `json:"per_page"`
	Count      int `json:"count"`
	TotalCount int `json:"total_count"`
	TotalPages int `json:"total_pages"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"success":false,"errors":[{"code":10001,"message":"marshal"}],"messages":[],"result":null}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Header().Set("Cf-Ray", randomHex(16)+"-IAD")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func writeFailure(w http.ResponseWriter, f *failure) {
	writeJSON(w, f.status, envelope{Errors: f.errs, Messages: []apiError{}})
}

// page cuts items for page/per_page from the query (defaults 1 and def).
func page[T any](r *http.Request, items []T, def, maxPer int) ([]T, *pageInfo, *failure) {
	q := r.URL.Query()
	p, per := 1, def
	if v := q.Get("page"); v != "" {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil || n < 1 {
			return nil, nil, badRequest(1004, "page must be a positive integer")
		}
		p = int(n)
	}
	if v := q.Get("per_page"); v != "" {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil || n < 1 || int(n) > maxPer {
			return nil, nil, badRequest(1004, "per_page must be between 1 and "+strconv.Itoa(maxPer))
		}
		per = int(n)
	}
	start := min((p-1)*per, len(items))
	end := min(start+per, len(items))
	pages := (len(items) + per - 1) / per
	return items[start:end], &pageInfo{Page: p, PerPage: per, Count: end - start, TotalCount: len(items), TotalPages: pages}, nil
}
