package server

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
)

func sha(s string) [32]byte { return sha256.Sum256([]byte(s)) }

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg, field string) {
	writeJSON(w, code, api.Error{Error: msg, Field: field})
}

func writeRetryAfter(w http.ResponseWriter, d time.Duration, msg string) {
	secs := int((d + time.Second - 1) / time.Second)
	w.Header().Set("Retry-After", strconv.Itoa(max(1, secs)))
	writeError(w, http.StatusTooManyRequests, msg, "")
}

// reqError is a request the server refuses, with its status.
type reqError struct {
	code  int
	msg   string
	field string
}

// refusal is a request the server refuses; write sends the reply.
type refusal interface{ write(w http.ResponseWriter) }

func (e *reqError) write(w http.ResponseWriter) { writeError(w, e.code, e.msg, e.field) }

// tooMany is a request refused for its rate: 429 with a Retry-After.
type tooMany struct {
	wait time.Duration
	msg  string
}

func (e tooMany) write(w http.ResponseWriter) { writeRetryAfter(w, e.wait, e.msg) }

// readBody reads the capped body.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, *reqError) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, api.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, &reqError{http.StatusRequestEntityTooLarge, "request body larger than " + strconv.Itoa(api.MaxBodyBytes) + " bytes", ""}
		}
		return nil, &reqError{http.StatusBadRequest, "read request body: " + err.Error(), ""}
	}
	return b, nil
}

// decodeStrict decodes exactly one JSON value into v, rejecting unknown
// fields by name.
func decodeStrict(b []byte, v any) *reqError {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return &reqError{http.StatusBadRequest, "malformed JSON: data after the request object", ""}
	}
	return nil
}

func jsonError(err error) *reqError {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		return &reqError{http.StatusBadRequest, "field " + te.Field + ": want " + te.Type.String() + ", got JSON " + te.Value, te.Field}
	case errors.As(err, &se), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return &reqError{http.StatusBadRequest, "malformed JSON: " + err.Error(), ""}
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		name = strings.Trim(name, `"`)
		return &reqError{http.StatusBadRequest, "unknown field " + strconv.Quote(name), name}
	}
	return &reqError{http.StatusBadRequest, "malformed JSON: " + err.Error(), ""}
}

// bearer returns the bearer token of r, or "".
func bearer(r *http.Request) string {
	v, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return ""
	}
	return strings.TrimSpace(v)
}

// requireAdmin checks the admin bearer token in constant time.
func (s *Server) requireAdmin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		got := sha(bearer(r))
		if subtle.ConstantTimeCompare(got[:], s.adminH[:]) != 1 {
			writeError(w, http.StatusUnauthorized, "admin token required: send Authorization: Bearer <admin token>", "")
			return
		}
		h(w, r)
	}
}

// statusWriter records the status code for metrics.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func (s *Server) instrument(route string, h http.HandlerFunc) http.HandlerFunc {
	obs := s.m.duration.WithLabelValues(route)
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		h(sw, r)
		obs.Observe(time.Since(start).Seconds())
		s.m.requests.WithLabelValues(route, strconv.Itoa(sw.code)).Inc()
	}
}
