//go:build unix

package ssmtest

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

const targetPrefix = "AmazonSSM."

// input is the union of the request members of the operations served.
type input struct {
	Name           *string  `json:"Name"`
	Names          []string `json:"Names"`
	Path           *string  `json:"Path"`
	Recursive      bool     `json:"Recursive"`
	WithDecryption bool     `json:"WithDecryption"`
	MaxResults     *int     `json:"MaxResults"`
	NextToken      *string  `json:"NextToken"`
}

// wireParam is a Parameter as SSM serialises it.
type wireParam struct {
	ARN              string  `json:"ARN"`
	DataType         string  `json:"DataType"`
	LastModifiedDate float64 `json:"LastModifiedDate"`
	Name             string  `json:"Name"`
	Type             string  `json:"Type"`
	Value            string  `json:"Value"`
	Version          int64   `json:"Version"`
}

// apiError is an error answer: HTTP status, __type and message.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func validation(msg string) *apiError {
	return &apiError{http.StatusBadRequest, "ValidationException", msg}
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	down := s.down
	s.mu.Unlock()
	rec := Request{Op: strings.TrimPrefix(r.Header.Get("X-Amz-Target"), targetPrefix)}
	switch down {
	case DownReset:
		s.record(rec)
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				_ = c.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	case Down503:
		rec.Status, rec.ErrorCode = http.StatusServiceUnavailable, "ServiceUnavailable"
		s.record(rec)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"__type": "ServiceUnavailable", "message": "Service Unavailable"})
		return
	}

	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	var in input
	if err == nil && len(body) > 0 {
		err = json.Unmarshal(body, &in)
	}
	rec.Names, rec.WithDecryption = in.Names, in.WithDecryption
	if in.Name != nil {
		rec.Names = []string{*in.Name}
	}
	if in.Path != nil {
		rec.Path = *in.Path
	}

	out, aerr := s.handle(r, body, rec.Op, in, err)
	if aerr != nil {
		rec.Status, rec.ErrorCode = aerr.status, aerr.code
		s.record(rec)
		writeJSON(w, aerr.status, map[string]string{"__type": aerr.code, "message": aerr.message})
		return
	}
	rec.Status = http.StatusOK
	s.record(rec)
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) record(r Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, r)
}

// handle authenticates, applies faults and runs the operation.
func (s *Server) handle(r *http.Request, body []byte, op string, in input, decodeErr error) (any, *apiError) {
	if aerr := s.verify(r, body); aerr != nil {
		return nil, aerr
	}
	if r.Method != http.MethodPost || !strings.HasPrefix(r.Header.Get("X-Amz-Target"), targetPrefix) {
		return nil, &apiError{http.StatusBadRequest, "UnknownOperationException", ""}
	}
	if decodeErr != nil {
		return nil, &apiError{http.StatusBadRequest, "SerializationException", "Start of structure or map found where not expected."}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.throttleN > 0 {
		s.throttleN--
		return nil, &apiError{http.StatusBadRequest, "ThrottlingException", "Rate exceeded"}
	}
	switch op {
	case "GetParameter":
		return s.getParameterLocked(in)
	case "GetParameters":
		return s.getParametersLocked(in)
	case "GetParametersByPath":
		return s.getParametersByPathLocked(in)
	case "PutParameter":
		return s.putParameterLocked(body)
	case "DeleteParameters":
		return s.deleteParametersLocked(in)
	}
	return nil, &apiError{http.StatusBadRequest, "UnknownOperationException", ""}
}

// authorizeLocked applies Deny prefixes and the policy (SetPolicy) to an
// action on the parameter or path name.
func (s *Server) authorizeLocked(action, name string) *apiError {
	if s.deniedLocked(name) {
		return s.accessDenied(action, name, implicitDeny)
	}
	if s.policy != nil {
		if d := s.policy.decide("ssm:"+action, s.arn(name)); d != allowed {
			return s.accessDenied(action, name, d)
		}
	}
	return nil
}

func (s *Server) accessDenied(action, name string, d decision) *apiError {
	why := "because no identity-based policy allows the ssm:" + action + " action"
	if d == explicitDeny {
		why = "with an explicit deny in an identity-based policy"
	}
	return &apiError{http.StatusBadRequest, "AccessDeniedException", fmt.Sprintf(
		"User: arn:aws:sts::%s:assumed-role/%s/i-0123456789abcdef0 is not authorized to perform: ssm:%s on resource: %s %s",
		Account, RoleName, action, s.arn(name), why)}
}

func (s *Server) wire(p *param, decrypt bool) wireParam {
	v := p.value
	if p.typ == SecureString && !decrypt {
		v = s.ciphertext(p)
	}
	return wireParam{
		ARN: s.arn(p.name), DataType: "text", Name: p.name, Type: p.typ, Value: v, Version: p.version,
		LastModifiedDate: float64(p.modified.UnixMilli()) / 1000,
	}
}

func (s *Server) getParameterLocked(in input) (any, *apiError) {
	if in.Name == nil || *in.Name == "" {
		return nil, validation("1 validation error detected: Value null at 'name' failed to satisfy constraint: Member must not be null")
	}
	if aerr := s.authorizeLocked("GetParameter", *in.Name); aerr != nil {
		return nil, aerr
	}
	p, ok := s.params[*in.Name]
	if !ok {
		return nil, &apiError{http.StatusBadRequest, "ParameterNotFound", ""}
	}
	return map[string]any{"Parameter": s.wire(p, in.WithDecryption)}, nil
}

func (s *Server) getParametersLocked(in input) (any, *apiError) {
	if len(in.Names) == 0 || len(in.Names) > 10 {
		return nil, validation(fmt.Sprintf("1 validation error detected: Value '%d' at 'names' failed to satisfy constraint: Member must have length less than or equal to 10 and greater than or equal to 1", len(in.Names)))
	}
	found, invalid := []wireParam{}, []string{}
	for _, n := range in.Names {
		if aerr := s.authorizeLocked("GetParameters", n); aerr != nil {
			return nil, aerr
		}
		if p, ok := s.params[n]; ok {
			found = append(found, s.wire(p, in.WithDecryption))
		} else {
			invalid = append(invalid, n)
		}
	}
	return map[string]any{"Parameters": found, "InvalidParameters": invalid}, nil
}

func (s *Server) getParametersByPathLocked(in input) (any, *apiError) {
	if in.Path == nil {
		return nil, validation("1 validation error detected: Value null at 'path' failed to satisfy constraint: Member must not be null")
	}
	path := *in.Path
	if !strings.HasPrefix(path, "/") {
		return nil, validation(`The parameter doesn't meet the parameter name requirements. The parameter name must begin with a forward slash "/".`)
	}
	limit := 10
	if in.MaxResults != nil {
		if *in.MaxResults < 1 || *in.MaxResults > 10 {
			return nil, validation(fmt.Sprintf("1 validation error detected: Value '%d' at 'maxResults' failed to satisfy constraint: Member must have value less than or equal to 10", *in.MaxResults))
		}
		limit = *in.MaxResults
	}
	if aerr := s.authorizeLocked("GetParametersByPath", strings.TrimSuffix(path, "/")); aerr != nil {
		return nil, aerr
	}
	base := strings.TrimSuffix(path, "/") + "/"
	var match []*param
	for _, p := range s.sortedLocked() {
		rest, ok := strings.CutPrefix(p.name, base)
		if !ok || rest == "" || (!in.Recursive && strings.Contains(rest, "/")) {
			continue
		}
		match = append(match, p)
	}
	start := 0
	if in.NextToken != nil {
		off, ok := parseToken(*in.NextToken, path)
		if !ok {
			return nil, &apiError{http.StatusBadRequest, "InvalidNextToken", "The specified token isn't valid."}
		}
		start = min(off, len(match))
	}
	end := min(start+limit, len(match))
	page := make([]wireParam, 0, end-start)
	for _, p := range match[start:end] {
		page = append(page, s.wire(p, in.WithDecryption))
	}
	out := map[string]any{"Parameters": page}
	if end < len(match) {
		out["NextToken"] = makeToken(path, end)
	}
	return out, nil
}

// makeToken encodes a paging position; it is opaque to clients.
func makeToken(path string, offset int) string {
	return base64.RawURLEncoding.EncodeToString([]byte("v1\x00" + path + "\x00" + strconv.Itoa(offset)))
}

func parseToken(tok, path string) (int, bool) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return 0, false
	}
	parts := strings.Split(string(b), "\x00")
	if len(parts) != 3 || parts[0] != "v1" || parts[1] != path {
		return 0, false
	}
	off, err := strconv.Atoi(parts[2])
	return off, err == nil && off >= 0
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"__type":"InternalServerError","message":"marshal"}`)
	}
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-Requestid", hex.EncodeToString(id))
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
