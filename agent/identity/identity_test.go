//go:build unix

package identity_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"maps"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/molecule-ai/molecule-agent/agent/identity"
	"github.com/molecule-ai/molecule-agent/agent/identity/imdstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// client returns an identity client against s with its own connections.
func client(t *testing.T, s *imdstest.Server, log *slog.Logger) *identity.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return identity.New(identity.Options{Endpoint: s.URL, HTTPClient: &http.Client{Transport: tr}, Logger: log})
}

func TestIdentity(t *testing.T) {
	t.Parallel()
	s := imdstest.New(t, imdstest.Instance{InstanceID: "i-0aaaabbbbccccdddd", AccountID: "210987654321"})
	c := client(t, s, nil)
	id, err := c.Identity(t.Context())
	if err != nil {
		t.Fatalf("Identity: %v", err)
	}
	d := imdstest.DefaultInstance
	want := identity.Identity{
		InstanceID: "i-0aaaabbbbccccdddd", Region: d.Region, AvailabilityZone: d.AvailabilityZone,
		PrivateIPv4: d.PrivateIP, AccountID: "210987654321", InstanceType: d.InstanceType, ImageID: d.ImageID,
	}
	got := id
	got.Document, got.PKCS7, got.Tags = nil, "", nil
	if !equalIdentity(got, want) {
		t.Errorf("Identity = %+v, want %+v", got, want)
	}
	if id.Tags != nil {
		t.Errorf("Tags with tags off = %v, want nil", id.Tags)
	}
	doc, err := imdstest.Verify(id.PKCS7, s.CAPEM())
	if err != nil || !bytes.Equal(doc, id.Document) {
		t.Errorf("PKCS7 does not verify to the document: %v", err)
	}

	s.EnableTags(map[string]string{"Name": "acme", "molecule:role": "tenant"})
	id, err = c.Identity(t.Context())
	if err != nil || !maps.Equal(id.Tags, map[string]string{"Name": "acme", "molecule:role": "tenant"}) {
		t.Errorf("Identity with tags = %v, %v", id.Tags, err)
	}
}

func equalIdentity(a, b identity.Identity) bool {
	return a.InstanceID == b.InstanceID && a.Region == b.Region && a.AvailabilityZone == b.AvailabilityZone &&
		a.PrivateIPv4 == b.PrivateIPv4 && a.AccountID == b.AccountID && a.InstanceType == b.InstanceType && a.ImageID == b.ImageID
}

// TestNoIMDSv1Fallback: where no token can be had, the client fails with an
// actionable error instead of reading metadata without a token. The control
// (TestV1OnlyServesAFallingBackClient in imdstest) shows the SDK's default
// client does read it there, so this test can fail.
func TestNoIMDSv1Fallback(t *testing.T) {
	t.Parallel()
	s := imdstest.New(t, imdstest.Instance{})
	s.SetV1Only(true)
	_, err := client(t, s, nil).Identity(t.Context())
	if err == nil {
		t.Fatal("Identity succeeded without an IMDSv2 token")
	}
	if !strings.Contains(err.Error(), "IMDSv2 only, never IMDSv1") || !strings.Contains(err.Error(), "failed to get API token") || !strings.Contains(err.Error(), "StatusCode: 403") {
		t.Errorf("error = %q, want the no-fallback explanation", err)
	}
	st := s.Stats()
	if st.V1Served != 0 || st.GETs != 0 || st.TokenRefused == 0 {
		t.Errorf("server stats = %+v, want token refused and no GET at all (no tokenless request)", st)
	}
}

// TestTokenRefresh: a client whose token expired gets a 401, fetches a new
// token and goes on; a missing path is ErrNotFound.
func TestTokenRefresh(t *testing.T) {
	t.Parallel()
	s := imdstest.New(t, imdstest.Instance{})
	c := client(t, s, nil)
	if _, err := c.Metadata(t.Context(), "instance-id"); err != nil {
		t.Fatal(err)
	}
	s.ExpireTokens()
	if v, err := c.Metadata(t.Context(), "instance-id"); err != nil || v != imdstest.DefaultInstance.InstanceID {
		t.Fatalf("after token expiry = %q, %v; want the instance ID", v, err)
	}
	if st := s.Stats(); st.TokensIssued != 2 || st.Unauthorized != 1 || st.V1Served != 0 {
		t.Errorf("stats = %+v, want 2 tokens, 1 unauthorized, 0 v1", st)
	}
	if _, err := c.Metadata(t.Context(), "no/such/path"); !errors.Is(err, identity.ErrNotFound) {
		t.Errorf("missing path error = %v, want ErrNotFound", err)
	}
}

// logBuffer is a concurrency-safe log sink.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type result struct {
	n   identity.Notice
	err error
}

func watch(ctx context.Context, c *identity.Client) chan result {
	ch := make(chan result, 1)
	go func() {
		n, err := c.Watch(ctx, time.Millisecond)
		ch <- result{n, err}
	}()
	return ch
}

// waitGETs waits until the server has answered n more GETs, proving the
// watcher polled without returning.
func waitGETs(t *testing.T, s *imdstest.Server, n int, ch chan result) {
	t.Helper()
	start := s.Stats().GETs
	deadline := time.Now().Add(10 * time.Second)
	for s.Stats().GETs < start+n {
		select {
		case r := <-ch:
			t.Fatalf("Watch returned early: %+v", r)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for polls")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestWatch(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 26, 4, 2, 0, 0, time.UTC)
	tests := []struct {
		name    string
		quiet   func(s *imdstest.Server) // state that is not a notice
		trigger func(s *imdstest.Server)
		want    identity.Notice
		line    string
	}{
		{name: "spot", trigger: func(s *imdstest.Server) { s.SetSpotAction("terminate", at) },
			want: identity.Notice{Kind: identity.SpotInterruption, Action: "terminate", Time: at},
			line: "spot-interruption: terminate at 2026-11-26T04:02:00Z"},
		{name: "asg", quiet: func(s *imdstest.Server) { s.SetLifecycleState("InService") },
			trigger: func(s *imdstest.Server) { s.SetLifecycleState("Terminated") },
			want:    identity.Notice{Kind: identity.ASGTerminate, Action: "Terminated"},
			line:    "asg-terminate: Terminated"},
		{name: "imds failing then notice", quiet: func(s *imdstest.Server) { s.SetV1Only(true) },
			trigger: func(s *imdstest.Server) { s.SetV1Only(false); s.SetSpotAction("stop", at) },
			want:    identity.Notice{Kind: identity.SpotInterruption, Action: "stop", Time: at},
			line:    "spot-interruption: stop at 2026-11-26T04:02:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := imdstest.New(t, imdstest.Instance{})
			logs := &logBuffer{}
			c := client(t, s, slog.New(slog.NewTextHandler(logs, nil)))
			if tt.quiet != nil {
				tt.quiet(s)
			}
			ch := watch(t.Context(), c)
			if tt.name == "imds failing then notice" {
				waitFor(t, "token refusals", func() bool { return s.Stats().TokenRefused >= 5 })
			} else {
				waitGETs(t, s, 6, ch)
			}
			tt.trigger(s)
			r := <-ch
			if r.err != nil || r.n != tt.want || r.n.String() != tt.line {
				t.Errorf("Watch = %+v (%q), %v; want %+v (%q)", r.n, r.n.String(), r.err, tt.want, tt.line)
			}
			if n := strings.Count(logs.String(), "cannot poll imds"); tt.quiet != nil && tt.name == "imds failing then notice" && n != 1 {
				t.Errorf("%d 'cannot poll' lines over many failed polls, want 1:\n%s", n, logs.String())
			}
		})
	}
}

func TestWatchCancel(t *testing.T) {
	t.Parallel()
	s := imdstest.New(t, imdstest.Instance{})
	ctx, cancel := context.WithCancel(t.Context())
	ch := watch(ctx, client(t, s, nil))
	waitGETs(t, s, 2, ch)
	cancel()
	if r := <-ch; !errors.Is(r.err, context.Canceled) {
		t.Errorf("Watch after cancel = %+v, want context.Canceled", r)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
