package cftest

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
)

// handler is one operation: it runs under s.mu and returns the result (and
// paging info for a list) or a failure.
type handler func(r *http.Request, body []byte) (any, *pageInfo, *failure)

func (s *Server) routes(mux *http.ServeMux) {
	const acct = "/client/v4/accounts/{account}/cfd_tunnel"
	const zone = "/client/v4/zones/{zone}/dns_records"
	add := func(pattern, op string, h handler) { mux.Handle(pattern, s.op(op, h)) }
	add("POST "+acct, OpCreateTunnel, s.createTunnel)
	add("GET "+acct, OpListTunnels, s.listTunnels)
	add("GET "+acct+"/{id}", OpGetTunnel, s.getTunnel)
	add("DELETE "+acct+"/{id}", OpDeleteTunnel, s.deleteTunnel)
	add("GET "+acct+"/{id}/configurations", OpGetConfig, s.getConfig)
	add("PUT "+acct+"/{id}/configurations", OpPutConfig, s.putConfig)
	add("GET "+acct+"/{id}/connections", OpGetConnections, s.getConnections)
	add("DELETE "+acct+"/{id}/connections", OpDeleteConnections, s.deleteConnections)
	add("GET "+acct+"/{id}/token", OpGetToken, s.getToken)
	add("POST "+zone, OpCreateRecord, s.createRecord)
	add("GET "+zone, OpListRecords, s.listRecords)
	add("GET "+zone+"/{id}", OpGetRecord, s.getRecord)
	add("PUT "+zone+"/{id}", OpUpdateRecord, s.updateRecord)
	add("PATCH "+zone+"/{id}", OpEditRecord, s.editRecord)
	add("DELETE "+zone+"/{id}", OpDeleteRecord, s.deleteRecord)
	mux.Handle("/", s.op("", func(*http.Request, []byte) (any, *pageInfo, *failure) {
		return nil, nil, badRequest(7000, "No route for that URI")
	}))
}

// op wraps a handler with what every call gets: bearer auth, the account or
// zone check, injected faults, the envelope, and the request record.
func (s *Server) op(name string, h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := Request{Op: name, Method: r.Method, Path: r.URL.Path}
		status, codes := s.serve(w, r, name, h)
		rec.Status, rec.Codes = status, codes
		s.mu.Lock()
		s.requests = append(s.requests, rec)
		s.mu.Unlock()
	})
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request, name string, h handler) (int, []int) {
	answer := func(f *failure) (int, []int) {
		writeFailure(w, f)
		codes := make([]int, 0, len(f.errs))
		for _, e := range f.errs {
			codes = append(codes, e.Code)
		}
		return f.status, codes
	}
	if f := checkAuth(r); f != nil {
		return answer(f)
	}
	if a := r.PathValue("account"); a != "" && a != AccountID {
		return answer(fail(http.StatusForbidden, 9109, "Unauthorized to access requested resource"))
	}
	if z := r.PathValue("zone"); z != "" && z != ZoneID {
		return answer(badRequest(7003, "Could not route to "+r.URL.Path+", perhaps your object identifier is invalid?"))
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return answer(badRequest(1001, "could not read the request body"))
	}
	s.mu.Lock()
	fault := s.takeFaultLocked(name)
	s.mu.Unlock()
	switch fault {
	case RateLimited:
		w.Header().Set("Retry-After", "1")
		return answer(fail(http.StatusTooManyRequests, 971, "Please wait and consider throttling your request speed"))
	case ServerError:
		return answer(fail(http.StatusInternalServerError, 10001, "Internal Server Error"))
	case BadGateway:
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = io.WriteString(w, "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>cloudflare</center></body></html>\n")
		return http.StatusBadGateway, nil
	case Forbidden:
		return answer(fail(http.StatusForbidden, 10000, "Authentication error"))
	}
	s.mu.Lock()
	result, info, f := h(r, body)
	s.mu.Unlock()
	if f != nil {
		return answer(f)
	}
	if fault == LostAnswer {
		return answer(fail(http.StatusInternalServerError, 10001, "Internal Server Error"))
	}
	writeJSON(w, http.StatusOK, envelope{Success: true, Errors: []apiError{}, Messages: []apiError{}, Result: result, ResultInfo: info})
	return http.StatusOK, nil
}

func checkAuth(r *http.Request) *failure {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || tok == "" {
		return &failure{http.StatusBadRequest, []apiError{{6003, "Invalid request headers"}, {6111, "Invalid format for Authorization header"}}}
	}
	if subtle.ConstantTimeCompare([]byte(tok), []byte(Token)) != 1 {
		return badRequest(1000, "Invalid API Token")
	}
	return nil
}

func (s *Server) takeFaultLocked(op string) Fault {
	for _, key := range []string{op, ""} {
		if q := s.faults[key]; len(q) > 0 {
			s.faults[key] = q[1:]
			return q[0]
		}
	}
	return 0
}

// decode reads a JSON body into v, answering like Cloudflare when it is not JSON.
func decode(body []byte, v any) *failure {
	if err := json.Unmarshal(body, v); err != nil {
		return badRequest(1001, "Invalid request: the request body is not valid JSON")
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}
