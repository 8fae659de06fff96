//go:build unix

// Package status serves the agent's local status API on a unix socket and
// reads it back for `molecule-agent status`. Nothing it serves holds a
// secret: unit states, identifiers, counters and error texts only.
package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/safefile"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
)

// Report is what GET /v1/status returns.
type Report struct {
	Agent Agent                   `json:"agent"`
	Units []supervisor.UnitStatus `json:"units"`
	// Sections carry the state of other parts (secrets, control plane,
	// identity) keyed by name.
	Sections map[string]any `json:"sections,omitempty"`
}

// Agent describes the agent process itself.
type Agent struct {
	Version string    `json:"version"`
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
	Role    string    `json:"role,omitempty"`
	// Phase is "starting", "running", "stopping" or "idle" (deprovisioned).
	Phase string `json:"phase"`
}

// Server serves the status API.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	path string
}

// Listen creates the socket at path with mode 0600 (its directory 0700 if
// it has to be created) and serves report on it. A stale socket left by a
// dead agent is replaced; a live one is an error.
func Listen(path string, report func() Report) (*Server, error) {
	// The socket is chmod'ed by path below: safe only in a directory no
	// other user can write, so a symlinked or foreign one is refused.
	if err := safefile.Mkdir(filepath.Dir(path), 0o700, -1); err != nil {
		return nil, fmt.Errorf("status socket: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("another agent is serving %s; stop it first", path)
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("status socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("status socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(report())
	})
	s := &Server{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, ln: ln, path: path}
	return s, nil
}

// Serve serves until Close.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Close stops serving and removes the socket.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	_ = os.Remove(s.path)
	return err
}

// Get reads the report from the socket at path.
func Get(ctx context.Context, path string) (*Report, error) {
	c := &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true, // one request per call: no idle connection outlives it
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent/v1/status", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("cannot reach the agent at %s: %w (is it running? are you root?)", path, err)
		}
		return nil, fmt.Errorf("cannot reach the agent at %s: %w (is it running?)", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("agent status: HTTP %d", resp.StatusCode)
	}
	var r Report
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, fmt.Errorf("agent status: %w", err)
	}
	return &r, nil
}
