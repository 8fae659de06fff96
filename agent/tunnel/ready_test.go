//go:build unix

package tunnel

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

// serve answers /ready with a fixed status and body on 127.0.0.1 and returns its port.
func serve(t *testing.T, status int, body string) int {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ready" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().(*net.TCPAddr).Port
}

func TestProbeReady(t *testing.T) {
	t.Parallel()
	const connector = "233540d7-5b94-4cdf-958b-8b95ac2217ae"
	tests := []struct {
		name       string
		status     int
		body       string
		wantReady  bool
		wantDetail string
		wantConns  int
		wantErr    string
	}{
		// The 503 body is verbatim from cloudflared 2026.7.1 in an empty netns.
		{"not connected", 503, `{"status":503,"readyConnections":0,"connectorId":"` + connector + `"}`, false, "0 connections", 0, ""},
		{"one connection", 200, `{"status":200,"readyConnections":1,"connectorId":"` + connector + `"}`, true, "1 connection", 1, ""},
		{"four connections", 200, `{"status":200,"readyConnections":4,"connectorId":"` + connector + `"}`, true, "4 connections", 4, ""},
		{"not cloudflared: 404", 404, `not found`, false, "metrics port not answering", 0, "HTTP 404"},
		{"not cloudflared: 200 text", 200, `OK`, false, "metrics port not answering", 0, "without cloudflared's JSON answer"},
		{"body disagrees with status", 200, `{"status":503,"readyConnections":0}`, false, "metrics port not answering", 0, "without cloudflared's JSON answer"},
		{"negative count", 503, `{"status":503,"readyConnections":-1}`, false, "metrics port not answering", 0, "without cloudflared's JSON answer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := NewProbe(serve(t, tt.status, tt.body), nil)
			ctx, cancel := context.WithTimeout(context.Background(), testenv.Short)
			defer cancel()
			ready, detail, err := p.Ready(ctx)
			if ready != tt.wantReady || detail != tt.wantDetail {
				t.Errorf("Ready = %v, %q; want %v, %q", ready, detail, tt.wantReady, tt.wantDetail)
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Ready error = %v, want nil", err)
				}
				if got := p.ReadyConnections(); got != tt.wantConns {
					t.Errorf("ReadyConnections = %d, want %d", got, tt.wantConns)
				}
				if got := p.ConnectorID(); got != connector {
					t.Errorf("ConnectorID = %q, want %q", got, connector)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Ready error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestProbeKeepsLastAnswerOnError(t *testing.T) {
	t.Parallel()
	var broken atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if broken.Load() {
			http.Error(w, "gone", http.StatusBadGateway)
			return
		}
		_, _ = w.Write([]byte(`{"status":200,"readyConnections":2,"connectorId":"c"}`))
	}))
	defer srv.Close()
	p := NewProbe(srv.Listener.Addr().(*net.TCPAddr).Port, srv.Client())
	ctx := context.Background()
	if ok, _, err := p.Ready(ctx); !ok || err != nil {
		t.Fatalf("first Ready = %v, %v; want true, nil", ok, err)
	}
	broken.Store(true)
	if ok, _, err := p.Ready(ctx); ok || err == nil {
		t.Fatalf("second Ready = %v, %v; want false and an error", ok, err)
	}
	if got := p.Last(); got.ReadyConnections != 2 || got.ConnectorID != "c" {
		t.Errorf("Last = %+v, want the earlier answer (2 connections, connector c)", got)
	}
}

func TestProbeNothingListening(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	p := NewProbe(port, nil)
	if p.URL != "http://127.0.0.1:"+strconv.Itoa(port)+"/ready" {
		t.Errorf("URL = %q, want loopback /ready on port %d", p.URL, port)
	}
	ready, detail, err := p.Ready(context.Background())
	if ready || err == nil || detail != "metrics port not answering" {
		t.Errorf("Ready = %v, %q, %v; want false, %q and an error", ready, detail, err, "metrics port not answering")
	}
}

func TestNotReadyTracker(t *testing.T) {
	t.Parallel()
	type obs struct {
		at          time.Duration // since t0
		ready       bool
		wantRestart bool
	}
	tests := []struct {
		name   string
		window time.Duration
		obs    []obs
	}{
		{"first 503 never restarts", 0, []obs{{0, false, false}}},
		{"ready never restarts", 0, []obs{{0, true, false}, {time.Hour, true, false}}},
		{"not ready just under the default window", 0, []obs{{0, false, false}, {DefaultNotReadyWindow - time.Second, false, false}}},
		{"not ready for the default window", 0, []obs{{0, false, false}, {time.Minute, false, false}, {DefaultNotReadyWindow, false, true}}},
		{"one ready answer restarts the clock", 0, []obs{
			{0, false, false}, {90 * time.Second, true, false}, {100 * time.Second, false, false},
			{DefaultNotReadyWindow + 10*time.Second, false, false}, {DefaultNotReadyWindow + 100*time.Second, false, true},
		}},
		{"after a restart the next run gets a full window", 0, []obs{
			{0, false, false}, {DefaultNotReadyWindow, false, true},
			{DefaultNotReadyWindow + time.Second, false, false}, {2*DefaultNotReadyWindow + time.Second, false, true},
		}},
		{"custom window", 30 * time.Second, []obs{{0, false, false}, {29 * time.Second, false, false}, {30 * time.Second, false, true}}},
		{"a long gap between polls still counts from the first not-ready", 0, []obs{{0, false, false}, {10 * time.Minute, false, true}}},
	}
	t0 := time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tr := NotReadyTracker{Window: tt.window}
			for i, o := range tt.obs {
				if got := tr.Observe(o.ready, t0.Add(o.at)); got != o.wantRestart {
					t.Errorf("observation %d (ready=%v at +%v): restart = %v, want %v", i, o.ready, o.at, got, o.wantRestart)
				}
			}
		})
	}
}

func TestNotReadyTrackerResetAndDuration(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)
	var tr NotReadyTracker
	if got := tr.NotReadyFor(t0); got != 0 {
		t.Errorf("NotReadyFor before any observation = %v, want 0", got)
	}
	tr.Observe(false, t0)
	if got, want := tr.NotReadyFor(t0.Add(time.Minute)), time.Minute; got != want {
		t.Errorf("NotReadyFor = %v, want %v", got, want)
	}
	tr.Reset()
	if tr.Observe(false, t0.Add(DefaultNotReadyWindow)) {
		t.Error("Observe right after Reset restarted; want a fresh window")
	}
}
