//go:build unix

package secretstore

import (
	"context"
	"errors"
	"fmt"
	"strings"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// Source fetches every secret the host may use, keyed by name relative to
// the source's location (tunnel-token, db/password).
type Source interface {
	// Fetch returns all secrets. A source with no secrets is an error, never
	// an empty map, so a wrong prefix cannot look like a successful start.
	Fetch(ctx context.Context) (map[string]Secret, error)
	// Location names where the secrets live for messages a person reads:
	// the SSM prefix or the file path.
	Location() string
}

// Kinds of fetch failure, matched with errors.Is on a *FetchError.
var (
	// ErrAccessDenied: the credentials may not read the location.
	ErrAccessDenied = errors.New("access denied")
	// ErrRejected: the service rejected the credentials or signature.
	ErrRejected = errors.New("credentials rejected")
	// ErrNoCredentials: no credentials could be had (no instance profile,
	// IMDS unreachable or refusing IMDSv2 tokens). Transient: retried.
	ErrNoCredentials = errors.New("no credentials")
	// ErrThrottled: the service kept throttling after capped retries.
	ErrThrottled = errors.New("throttled")
	// ErrUnreachable: the endpoint could not be reached or answered 5xx.
	ErrUnreachable = errors.New("unreachable")
	// ErrEmpty: the location holds no secrets.
	ErrEmpty = errors.New("no secrets")
	// ErrInvalid: the source's data or configuration is malformed.
	ErrInvalid = errors.New("invalid")
)

// FetchError is a Source failure a person can act on. Kind is one of the
// Err* values above; Err is the underlying cause.
type FetchError struct {
	Location string
	Kind     error
	Msg      string // what happened and what to do, without the cause
	Err      error
}

func (e *FetchError) Error() string {
	if e.Err == nil {
		return e.Msg
	}
	return e.Msg + ": " + shortCause(e.Err)
}

// shortCause keeps a service's error code and message, or a transport's
// own error, and drops the SDK's operation and request-ID wrapping so
// status lines stay short. Unwrap still reaches the full chain.
func shortCause(err error) string {
	var ae smithy.APIError
	var se *smithyhttp.RequestSendError
	var re *awshttp.ResponseError
	switch {
	case errors.As(err, &ae):
		if m := ae.ErrorMessage(); m != "" {
			return ae.ErrorCode() + ": " + m
		}
		return ae.ErrorCode()
	case errors.As(err, &se):
		return se.Err.Error()
	case errors.As(err, &re) && re.HTTPStatusCode() != 0:
		return fmt.Sprintf("http status %d", re.HTTPStatusCode())
	}
	return err.Error()
}

// Unwrap returns the underlying cause.
func (e *FetchError) Unwrap() error { return e.Err }

// Is matches the failure's Kind.
func (e *FetchError) Is(target error) bool { return target == e.Kind }

// Transient reports whether err is worth retrying soon: unreachable
// endpoints, throttling, and unclassified failures. Access denied, rejected
// credentials, an empty location and invalid data need a person.
func Transient(err error) bool {
	for _, k := range []error{ErrAccessDenied, ErrRejected, ErrEmpty, ErrInvalid} {
		if errors.Is(err, k) {
			return false
		}
	}
	return err != nil
}

// MissingError says a referenced secret is not available. A unit whose
// required secret is missing must not start; its status shows this error.
type MissingError struct {
	Name     string
	Location string
	// Cause is set when no fetch has succeeded yet: why the secrets are not loaded.
	Cause error
}

func (e *MissingError) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("parameter %s unavailable: %v", e.Name, e.Cause)
	}
	return fmt.Sprintf("parameter %s missing under %s", e.Name, e.Location)
}

// Unwrap returns the cause, if any.
func (e *MissingError) Unwrap() error { return e.Cause }

// RefPrefix starts a value that names a secret instead of holding one.
const RefPrefix = "secret:"

// ParseRef reports whether v is a secret reference ("secret:<name>") and
// returns the name. A value with the prefix but an invalid name is an error.
func ParseRef(v string) (name string, ok bool, err error) {
	name, ok = strings.CutPrefix(v, RefPrefix)
	if !ok {
		return "", false, nil
	}
	if err := ValidName(name); err != nil {
		return "", true, fmt.Errorf("secret reference %q: %w", v, err)
	}
	return name, true, nil
}

// maxNameLen bounds a name; SSM's full-name limit is 2048.
const maxNameLen = 1024

// ValidName checks a secret name: slash-separated segments of letters,
// digits, '.', '-' and '_', as SSM parameter names relative to a prefix.
func ValidName(name string) error {
	switch {
	case name == "":
		return errors.New("empty secret name")
	case len(name) > maxNameLen:
		return fmt.Errorf("secret name longer than %d bytes", maxNameLen)
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("secret name %q: empty, '.' or '..' path segment", name)
		}
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-", r)) {
			return fmt.Errorf("secret name %q: character %q not allowed (use letters, digits, / . _ -)", name, r)
		}
	}
	return nil
}
