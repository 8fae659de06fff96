package api

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/molecule-ai/molecule-agent/controlplane/api/backoff"
	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
)

// Retry policy
//
// The client retries with the backoff of controlplane/api/backoff, its
// defaults AgentRetry (retry.go), and honours
// Retry-After on 429 and 503. What it retries depends on whether the call is
// idempotent:
//
//   - Idempotent calls (register, heartbeat, every admin GET/PUT, deprovision)
//     are retried on transport errors, 429, 502, 503 and 504. Register and
//     heartbeat are only idempotent because the server makes them so: a
//     heartbeat overwrites the host's live state, and a repeated register for
//     the same instance and boot returns the same host ID with a fresh token
//     (the token of a lost reply is never used, so rotating it is harmless).
//   - Non-idempotent calls (creating an enrollment token, starting a
//     rollout) carry no idempotency key, so they are retried only
//     when the request cannot have been acted on: the connection was never
//     made (dial error), or the server refused it with 429/503 before doing
//     anything.
//
// Every call runs under the caller's context plus Options.RequestTimeout,
// which bounds all attempts together.

// Options configure a Client.
type Options struct {
	// BaseURL is the control plane, e.g. http://127.0.0.1:7070.
	BaseURL string
	// HTTPClient is used for each attempt; default: a pooled client with a
	// 10s timeout per attempt.
	HTTPClient *http.Client
	// RootCAs, or the PEM bundle CAFile, pins the CAs that may sign the
	// control plane's certificate (control_plane.ca_file) instead of the
	// system's; only with the default HTTPClient.
	RootCAs *x509.CertPool
	CAFile  string
	// Logger receives retry decisions at debug level; default: discard.
	Logger *slog.Logger
	// AdminToken authenticates the admin methods.
	AdminToken secret.Secret
	// RetryMax is the number of retries after the first attempt (default
	// AgentRetry's, 3; negative means none).
	RetryMax int
	// RetryWaitMin and RetryWaitMax bound the backoff (default AgentRetry's,
	// 250ms and 10s).
	RetryWaitMin, RetryWaitMax time.Duration
	// RequestTimeout bounds one call including its retries (default
	// AgentRetry's, 30s).
	RequestTimeout time.Duration
}

// Client talks to the control plane. It is safe for concurrent use.
type Client struct {
	base    *url.URL
	rc      *retryablehttp.Client
	admin   secret.Secret
	timeout time.Duration
}

// New returns a client for opts.BaseURL.
func New(opts Options) (*Client, error) {
	u, err := url.Parse(opts.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("control_plane.url %q: want http(s)://host[:port]", opts.BaseURL)
	}
	hc, err := httpClient(opts)
	if err != nil {
		return nil, err
	}
	lg := opts.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	rc := &retryablehttp.Client{
		HTTPClient:   hc,
		Logger:       lg,
		RetryWaitMin: orDefault(opts.RetryWaitMin, AgentRetry.RetryWaitMin),
		RetryWaitMax: orDefault(opts.RetryWaitMax, AgentRetry.RetryWaitMax),
		RetryMax:     opts.RetryMax,
		CheckRetry:   checkRetry,
		Backoff:      retryBackoff,
		ErrorHandler: errorHandler,
	}
	switch {
	case opts.RetryMax == 0:
		rc.RetryMax = AgentRetry.RetryMax
	case opts.RetryMax < 0:
		rc.RetryMax = 0
	}
	return &Client{base: u, rc: rc, admin: opts.AdminToken, timeout: orDefault(opts.RequestTimeout, AgentRetry.RequestTimeout)}, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

type idempotentKey struct{}

// checkRetry decides whether to retry an attempt; see "Retry policy".
func checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	idempotent, _ := ctx.Value(idempotentKey{}).(bool)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return true, nil
		}
		if !idempotent {
			return false, nil
		}
		return retryablehttp.DefaultRetryPolicy(ctx, resp, err)
	}
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		return true, nil
	case http.StatusBadGateway, http.StatusGatewayTimeout:
		return idempotent, nil
	}
	return false, nil
}

// retryBackoff is go-retryablehttp's backoff hook: backoff.Policy between
// lo and hi, honouring Retry-After on 429 and 503.
func retryBackoff(lo, hi time.Duration, attempt int, resp *http.Response) time.Duration {
	var ra time.Duration
	if resp != nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
		ra, _ = ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	return backoff.Policy{Min: lo, Max: hi}.Delay(attempt+1, ra)
}

// ParseRetryAfter parses a Retry-After header in seconds or HTTP-date form.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 || n > 24*3600 {
			return 0, false
		}
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	if d := t.Sub(now); d > 0 {
		return d, true
	}
	return 0, true
}

// errorHandler keeps the last response when retries are exhausted so the
// caller sees its status (401, 410, 429 with Retry-After), and says how many
// attempts a transport failure took.
func errorHandler(resp *http.Response, err error, attempts int) (*http.Response, error) {
	if resp != nil {
		return resp, nil
	}
	return nil, fmt.Errorf("giving up after %d attempt(s): %w", attempts, err)
}

// call does one API call: JSON body in, JSON body out.
func (c *Client) call(ctx context.Context, op, method, path string, idempotent bool, bearer secret.Secret, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	ctx = context.WithValue(ctx, idempotentKey{}, idempotent)
	var body []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s: encode request: %w", op, err)
		}
		body = b
	}
	u := c.base.JoinPath(path)
	if i := strings.IndexByte(path, '?'); i >= 0 {
		u = c.base.JoinPath(path[:i])
		u.RawQuery = path[i+1:]
	}
	var rawBody any
	if body != nil {
		rawBody = bytes.NewReader(body)
	}
	req, err := retryablehttp.NewRequestWithContext(ctx, method, u.String(), rawBody)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if !bearer.IsZero() {
		req.Header.Set("Authorization", "Bearer "+bearer.Reveal())
	}
	resp, err := c.rc.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", op, tlsHint(err))
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
	}()
	if resp.StatusCode/100 != 2 {
		return decodeError(op, resp)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 8<<20)).Decode(out); err != nil {
		return fmt.Errorf("%s: decode reply: %w", op, err)
	}
	return nil
}

func decodeError(op string, resp *http.Response) error {
	se := &StatusError{Op: op, Code: resp.StatusCode}
	var e Error
	if json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e) == nil {
		se.Message, se.Field = e.Error, e.Field
	}
	if ra, ok := ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
		se.RetryAfter = ra
	}
	return se
}
