package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// scripted serves the given statuses in order, then 200 with body ok.
func scripted(t *testing.T, statuses []int, header http.Header, ok any) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := int(n.Add(1)) - 1
		if i < len(statuses) {
			for k, v := range header {
				w.Header()[k] = v
			}
			w.WriteHeader(statuses[i])
			_ = json.NewEncoder(w).Encode(Error{Error: "scripted", Field: "units[0].name"})
			return
		}
		_ = json.NewEncoder(w).Encode(ok)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func newClient(t *testing.T, url string) *Client {
	t.Helper()
	c, err := New(Options{BaseURL: url, RetryWaitMin: time.Millisecond, RetryWaitMax: 5 * time.Millisecond, AdminToken: secret.New("admin")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.rc.HTTPClient.CloseIdleConnections)
	return c
}

func TestRetryPolicy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		statuses     []int
		idempotent   bool
		wantAttempts int32
		wantErr      error
		wantCode     int
	}{
		{"heartbeat retried on 503", []int{503, 503}, true, 3, nil, 0},
		{"heartbeat retried on 502", []int{502}, true, 2, nil, 0},
		{"heartbeat retried on 429", []int{429}, true, 2, nil, 0},
		{"heartbeat not retried on 401", []int{401}, true, 1, ErrUnauthorized, 0},
		{"heartbeat not retried on 410", []int{410}, true, 1, ErrGone, 0},
		{"heartbeat not retried on 500", []int{500}, true, 1, nil, 0},
		{"heartbeat gives up after RetryMax", []int{503, 503, 503, 503, 503}, true, 4, nil, 503},
		{"token creation not retried on 502", []int{502}, false, 1, nil, 0},
		{"token creation retried on 429", []int{429}, false, 2, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, n := scripted(t, tt.statuses, http.Header{"Retry-After": {"0"}}, HeartbeatResponse{IntervalMS: 1000})
			c := newClient(t, srv.URL)
			var err error
			if tt.idempotent {
				_, err = c.Heartbeat(context.Background(), "h1", secret.New("tok"), HeartbeatRequest{})
			} else {
				_, err = c.CreateEnrollmentToken(context.Background(), EnrollmentTokenRequest{})
			}
			if got := n.Load(); got != tt.wantAttempts {
				t.Errorf("attempts = %d, want %d", got, tt.wantAttempts)
			}
			wantFail := len(tt.statuses) >= int(tt.wantAttempts) && tt.wantAttempts <= int32(len(tt.statuses))
			if wantFail && err == nil {
				t.Fatalf("err = nil, want failure")
			}
			if !wantFail && err != nil {
				t.Fatalf("err = %v, want success", err)
			}
			var se *StatusError
			if tt.wantCode != 0 && (!errors.As(err, &se) || se.Code != tt.wantCode) {
				t.Errorf("err = %v, want status %d", err, tt.wantCode)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want errors.Is %v", err, tt.wantErr)
			}
		})
	}
}

func TestStatusErrorCarriesFieldAndRetryAfter(t *testing.T) {
	t.Parallel()
	srv, _ := scripted(t, []int{400}, http.Header{"Retry-After": {"3"}}, nil)
	c := newClient(t, srv.URL)
	_, err := c.Heartbeat(context.Background(), "h1", secret.New("s3cret-token"), HeartbeatRequest{})
	var se *StatusError
	if !errors.As(err, &se) {
		t.Fatalf("err = %T %v, want *StatusError", err, err)
	}
	if se.Code != 400 || se.Field != "units[0].name" || se.RetryAfter != 3*time.Second {
		t.Errorf("got code=%d field=%q retryAfter=%s, want 400 units[0].name 3s", se.Code, se.Field, se.RetryAfter)
	}
	if strings.Contains(err.Error(), "s3cret-token") {
		t.Errorf("error %q leaks the token", err)
	}
}

func TestRequestTimeoutBoundsAllAttempts(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	c, err := New(Options{BaseURL: srv.URL, RequestTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.rc.HTTPClient.CloseIdleConnections)
	_, err = c.Heartbeat(context.Background(), "h1", secret.New("t"), HeartbeatRequest{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
}

func TestDialErrorRetriedEvenIfNotIdempotent(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens any more
	c := newClient(t, url)
	_, err := c.CreateEnrollmentToken(context.Background(), EnrollmentTokenRequest{})
	if err == nil || !strings.Contains(err.Error(), "giving up after 4 attempt") {
		t.Fatalf("err = %v, want giving up after 4 attempts", err)
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	ra := func(code int, v string) *http.Response {
		return &http.Response{StatusCode: code, Header: http.Header{"Retry-After": {v}}}
	}
	tests := []struct {
		name     string
		attempt  int
		resp     *http.Response
		min, max time.Duration
	}{
		{"first attempt", 0, nil, 50 * time.Millisecond, 200 * time.Millisecond},
		{"third attempt", 3, nil, 50 * time.Millisecond, 1600 * time.Millisecond},
		{"capped", 20, nil, 50 * time.Millisecond, 5 * time.Second},
		{"huge attempt", 200, nil, 50 * time.Millisecond, 5 * time.Second},
		{"429 retry-after", 0, ra(429, "7"), 7 * time.Second, 7700 * time.Millisecond},
		{"503 retry-after above max honoured", 0, ra(503, "30"), 30 * time.Second, 33 * time.Second},
		{"500 retry-after ignored", 0, ra(500, "30"), 50 * time.Millisecond, 200 * time.Millisecond},
		{"garbage retry-after", 1, ra(429, "soon"), 50 * time.Millisecond, 400 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for range 200 {
				got := retryBackoff(100*time.Millisecond, 5*time.Second, tt.attempt, tt.resp)
				if got < tt.min || got > tt.max {
					t.Fatalf("retryBackoff = %s, want in [%s, %s]", got, tt.min, tt.max)
				}
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		in     string
		want   time.Duration
		wantOK bool
	}{
		{"", 0, false},
		{"5", 5 * time.Second, true},
		{" 0 ", 0, true},
		{"-1", 0, false},
		{"99999999", 0, false},
		{"Thu, 01 Jan 2026 00:00:10 GMT", 10 * time.Second, true},
		{"Wed, 31 Dec 2025 23:00:00 GMT", 0, true},
		{"tomorrow", 0, false},
	}
	for _, tt := range tests {
		got, ok := ParseRetryAfter(tt.in, now)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("ParseRetryAfter(%q) = %s, %v; want %s, %v", tt.in, got, ok, tt.want, tt.wantOK)
		}
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "1", "-5", "Thu, 01 Jan 2026 00:00:10 GMT", "9223372036854775807", "1e9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := ParseRetryAfter(s, time.Now())
		if d < 0 || (!ok && d != 0) {
			t.Fatalf("ParseRetryAfter(%q) = %s, %v", s, d, ok)
		}
	})
}

func TestNewRejectsBadURL(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"", "ftp://x", "127.0.0.1:7070", "http://"} {
		if _, err := New(Options{BaseURL: u}); err == nil || !strings.Contains(err.Error(), "control_plane.url") {
			t.Errorf("New(%q) err = %v, want control_plane.url error", u, err)
		}
	}
}
