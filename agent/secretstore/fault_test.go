//go:build unix

package secretstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/secretstore"
	"github.com/molecule-ai/molecule-agent/agent/secretstore/ssmtest"
)

// changes collects OnChange calls.
type changes struct {
	mu    sync.Mutex
	calls [][]string
}

func (c *changes) add(names []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, names)
}

func (c *changes) get() [][]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.calls)
}

// runStore starts a store over src with fast test timings; the returned
// function stops Run and fails the test unless it returned nil.
func runStore(t *testing.T, src secretstore.Source, logs *logBuffer, ch *changes) (*secretstore.Store, func()) {
	t.Helper()
	st := secretstore.NewStore(src, secretstore.StoreOptions{
		Refresh: 20 * time.Millisecond, BootBackoff: time.Millisecond, MaxBootBackoff: 5 * time.Millisecond,
		OnChange: ch.add, Logger: logs.logger(),
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- st.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run returned %v after cancel, want nil", err)
			}
		})
	}
	t.Cleanup(stop)
	return st, stop
}

func TestFaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		setup     func(s *ssmtest.Server)
		wrongKey  bool
		kind      error  // errors.Is kind of the fetch failure, nil when the fetch succeeds
		wantMsg   string // the status line (LastError) while broken
		wantRef   string // the unit status for secret:tunnel-token while broken
		retries   bool   // transient: retried with one log line per backoff step
		fix       func(s *ssmtest.Server)
		wantNames []string // OnChange after the fix (default: every name)
	}{
		{
			name:    "access denied",
			setup:   func(s *ssmtest.Server) { s.Deny(prefix) },
			kind:    secretstore.ErrAccessDenied,
			wantMsg: "instance role cannot read " + prefix + ": grant ssm:GetParametersByPath (and kms:Decrypt via SSM) on it: AccessDeniedException: User: arn:aws:sts::123456789012:assumed-role/molecule-agent/",
			wantRef: "parameter tunnel-token unavailable: instance role cannot read " + prefix,
			fix:     func(s *ssmtest.Server) { s.AllowAll() },
		},
		{
			name:      "missing parameter",
			setup:     func(s *ssmtest.Server) { s.Delete(prefix + "/tunnel-token") },
			wantRef:   "parameter tunnel-token missing under " + prefix,
			fix:       func(s *ssmtest.Server) { s.PutSecure(prefix+"/tunnel-token", "tun-new-value-1") },
			wantNames: []string{"tunnel-token"},
		},
		{
			name:    "no parameters under the prefix",
			setup:   func(s *ssmtest.Server) { deleteAll(s) },
			kind:    secretstore.ErrEmpty,
			wantMsg: "no parameters under " + prefix + ": put the host's secrets there or fix secrets.prefix",
			wantRef: "parameter tunnel-token unavailable: no parameters under " + prefix,
			fix:     func(s *ssmtest.Server) { tenant(s) },
		},
		{
			name:    "throttling storm",
			setup:   func(s *ssmtest.Server) { s.Throttle(1 << 30) },
			kind:    secretstore.ErrThrottled,
			wantMsg: "ssm kept throttling reads of " + prefix + " after retries: lower the refresh rate or the account's SSM call volume: ThrottlingException: Rate exceeded",
			wantRef: "parameter tunnel-token unavailable: ssm kept throttling",
			retries: true,
			fix:     func(s *ssmtest.Server) { s.Throttle(0) },
		},
		{
			name:    "endpoint down at boot (connection reset) then up",
			setup:   func(s *ssmtest.Server) { s.SetDown(ssmtest.DownReset) },
			kind:    secretstore.ErrUnreachable,
			wantMsg: "cannot reach ssm to read " + prefix + ": Post \"http://127.0.0.1:",
			wantRef: "parameter tunnel-token unavailable: cannot reach ssm",
			retries: true,
			fix:     func(s *ssmtest.Server) { s.SetDown(ssmtest.Up) },
		},
		{
			name:    "endpoint down at boot (503) then up",
			setup:   func(s *ssmtest.Server) { s.SetDown(ssmtest.Down503) },
			kind:    secretstore.ErrUnreachable,
			wantMsg: "ssm endpoint unavailable reading " + prefix + ": ServiceUnavailable: Service Unavailable",
			wantRef: "parameter tunnel-token unavailable: ssm endpoint unavailable",
			retries: true,
			fix:     func(s *ssmtest.Server) { s.SetDown(ssmtest.Up) },
		},
		{
			name:     "sigv4 rejected",
			wrongKey: true,
			kind:     secretstore.ErrRejected,
			wantMsg:  "ssm rejected the credentials reading " + prefix + ": check the instance role credentials and the host clock: InvalidSignatureException: The request signature we calculated does not match",
			wantRef:  "parameter tunnel-token unavailable: ssm rejected the credentials",
			fix:      func(s *ssmtest.Server) { s.AcceptKey(ssmtest.AccessKeyID, ssmtest.WrongSecretAccessKey) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := ssmtest.New(t)
			values := tenant(s)
			values["fixed"] = "tun-new-value-1"
			if tt.setup != nil {
				tt.setup(s)
			}
			creds := s.Credentials()
			if tt.wrongKey {
				creds = s.WrongCredentials()
			}
			src := newSSM(t, s, creds, 3)

			_, err := src.Fetch(t.Context())
			if tt.kind == nil && err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			if tt.kind != nil && (!errors.Is(err, tt.kind) || !strings.HasPrefix(err.Error(), tt.wantMsg)) {
				t.Fatalf("Fetch error = %q, want kind %v and prefix %q", err, tt.kind, tt.wantMsg)
			}
			if tt.kind != nil && secretstore.Transient(err) != tt.retries {
				t.Errorf("Transient(%v) = %v, want %v", err, !tt.retries, tt.retries)
			}

			logs, ch := &logBuffer{}, &changes{}
			st, stop := runStore(t, src, logs, ch)
			if tt.kind != nil {
				waitFor(t, "the failure in Status", func() bool { return strings.HasPrefix(st.Status().LastError, tt.wantMsg) })
				if tt.retries {
					waitFor(t, "two backoff steps", func() bool { return strings.Count(logs.String(), "retrying") >= 2 })
				}
			} else {
				waitFor(t, "the first load", func() bool { return st.Status().Loaded })
			}
			_, rerr := st.Resolve("secret:tunnel-token")
			var me *secretstore.MissingError
			if !errors.As(rerr, &me) || !strings.HasPrefix(rerr.Error(), tt.wantRef) {
				t.Errorf("Resolve(secret:tunnel-token) error = %v, want a *MissingError starting %q", rerr, tt.wantRef)
			}
			if tt.kind != nil && !errors.Is(rerr, tt.kind) {
				t.Errorf("Resolve error %v does not wrap %v", rerr, tt.kind)
			}
			statusJSON, err := json.Marshal(st.Status())
			if err != nil {
				t.Fatal(err)
			}

			before := len(ch.get())
			tt.fix(s)
			waitFor(t, "a change after the fix", func() bool { return len(ch.get()) > before })
			wantNames := tt.wantNames
			if wantNames == nil {
				for n := range values {
					if n != "fixed" {
						wantNames = append(wantNames, n)
					}
				}
				slices.Sort(wantNames)
			}
			if got := ch.get()[before]; !slices.Equal(got, wantNames) {
				t.Errorf("OnChange after the fix = %v, want %v", got, wantNames)
			}
			v, err := st.Resolve("secret:tunnel-token")
			if err != nil || (v.Reveal() != values["tunnel-token"] && v.Reveal() != values["fixed"]) {
				t.Errorf("after the fix Resolve(secret:tunnel-token) = right value %v, err %v", err == nil, err)
			}
			stop()
			if st := st.Status(); st.LastError != "" || !st.Loaded || st.Count != len(values)-1 {
				t.Errorf("status after the fix = %+v, want loaded, no error, %d secrets", st, len(values)-1)
			}
			checkBackoffLog(t, logs.String(), tt.retries)
			assertNoValues(t, "the log", logs.String(), values)
			assertNoValues(t, "the status", string(statusJSON), values)
		})
	}
}

func deleteAll(s *ssmtest.Server) {
	for n := range tenant(s) {
		s.Delete(prefix + "/" + n)
	}
}

var attemptRE = regexp.MustCompile(`secrets fetch failed; retrying" .*attempt=(\d+) retry_in=\S+`)

// checkBackoffLog checks "one line per backoff step": each retry line is a
// new attempt, numbered 1, 2, 3... and permanent failures log no retries.
func checkBackoffLog(t *testing.T, log string, retries bool) {
	t.Helper()
	n := 0
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, "retrying\"") {
			continue
		}
		m := attemptRE.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("malformed backoff line %q", line)
			continue
		}
		n++
		if got, _ := strconv.Atoi(m[1]); got != n {
			t.Errorf("backoff line %d says attempt=%d, want one line per step (%d)", n, got, n)
		}
	}
	if retries && n < 2 || !retries && n != 0 {
		t.Errorf("%d backoff lines, want retries=%v", n, retries)
	}
}
