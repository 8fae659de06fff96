package api

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Sentinel errors matched with errors.Is against a *StatusError.
var (
	// ErrUnauthorized (401): the host token is unknown or stale; the agent
	// registers again.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrGone (410): the host was deprovisioned; the agent stops its units
	// and stays idle.
	ErrGone = errors.New("host deprovisioned")
	// ErrConflict (409): the instance is registered by another boot and the
	// request did not present the current host token.
	ErrConflict = errors.New("conflict")
	// ErrForbidden (403): the proof is valid but does not allow this.
	ErrForbidden = errors.New("forbidden")
	// ErrRateLimited (429): slow down; RetryAfter says for how long.
	ErrRateLimited = errors.New("rate limited")
	// ErrNotFound (404).
	ErrNotFound = errors.New("not found")
)

// StatusError is a non-2xx reply from the control plane.
type StatusError struct {
	Op         string
	Code       int
	Message    string
	Field      string
	RetryAfter time.Duration
}

// Error implements error.
func (e *StatusError) Error() string {
	msg := fmt.Sprintf("%s: control plane answered %d %s", e.Op, e.Code, http.StatusText(e.Code))
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// Is maps status codes to the sentinel errors.
func (e *StatusError) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.Code == http.StatusUnauthorized
	case ErrGone:
		return e.Code == http.StatusGone
	case ErrConflict:
		return e.Code == http.StatusConflict
	case ErrForbidden:
		return e.Code == http.StatusForbidden
	case ErrRateLimited:
		return e.Code == http.StatusTooManyRequests
	case ErrNotFound:
		return e.Code == http.StatusNotFound
	}
	return false
}
