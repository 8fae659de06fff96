//go:build unix

// Command standin-runtime behaves like the workspace runtime (molecule-core's
// workspace/, console script molecule-runtime) as far as the agent and the
// tenant platform can tell, awkward parts included (docs/platform-contract.md §6):
//
//   - it reads $WORKSPACE_CONFIG_PATH/config.yaml and exits 1 without it;
//   - stdout is block-buffered (8 KiB, as Python's is when stdout is not a
//     terminal) unless PYTHONUNBUFFERED is set non-empty; stderr is
//     unbuffered; so the register line reaches the agent only when the
//     buffer fills (the access-log lines of the readiness probe do that) or
//     the process exits cleanly;
//   - it registers once, BEFORE it listens: POST $PLATFORM_URL/registry/register
//     with the real RegisterPayload, prints "Registered with platform:
//     <status>" and ignores a non-200 answer; an unreachable platform prints
//     "Warning: failed to register with platform: <error>";
//   - it reads the token from $CONFIGS_DIR/.auth_token on each request until
//     it finds one, then caches it for the life of the process;
//   - a 200 register answer carrying an auth_token different from its own is
//     saved in place (O_WRONLY|O_CREAT|O_TRUNC, 0600 on create: an existing
//     file keeps its mode and owner) and it prints "Saved workspace auth
//     token (prefix=<first 8 characters>…)", as the real one does;
//   - it serves GET /.well-known/agent-card.json on 0.0.0.0:<a2a.port> and
//     prints a uvicorn-style access-log line to stdout for each request;
//   - it heartbeats at once, then every $STANDIN_HEARTBEAT_INTERVAL (default
//     30s, the real cadence); 401s are silent, as in heartbeat.py;
//   - on SIGTERM it shuts the server down and dies by the signal (wait
//     status 143), dropping what is still in the stdout buffer;
//   - for redaction tests, it prints NAME=value of the variable named by
//     $STANDIN_ECHO_ENV, as a runtime dumping its environment would;
//   - when $STANDIN_EXEC_LOG is set, it appends one line per start to that
//     file (an exec counter for tests: "the runtime never ran").
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"
)

type config struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	Version     string `yaml:"version"`
	A2A         struct {
		Port int `yaml:"port"`
	} `yaml:"a2a"`
}

// stdout is the runtime's stdout: buffered like Python's unless
// PYTHONUNBUFFERED is set.
var stdout = newOut()

type out struct {
	mu  sync.Mutex
	w   *bufio.Writer
	raw bool
}

func newOut() *out {
	return &out{w: bufio.NewWriterSize(os.Stdout, 8192), raw: os.Getenv("PYTHONUNBUFFERED") != ""}
}

func (o *out) Printf(format string, a ...any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	fmt.Fprintf(o.w, format, a...)
	if o.raw {
		_ = o.w.Flush()
	}
}

func (o *out) Flush() {
	o.mu.Lock()
	defer o.mu.Unlock()
	_ = o.w.Flush()
}

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	ctx, cancel := context.WithCancel(context.Background())
	var got os.Signal
	go func() { got = <-sig; cancel() }()
	err := run(ctx)
	if got != nil {
		// uvicorn re-raises the signal after its shutdown: the process dies
		// by it and the stdout buffer is never flushed.
		s := got.(syscall.Signal)
		signal.Reset(s)
		_ = syscall.Kill(os.Getpid(), s)
		time.Sleep(time.Second)
		os.Exit(128 + int(s))
	}
	if err != nil {
		stdout.Flush()
		fmt.Fprintln(os.Stderr, "RUNTIME CRASHED:", err)
		os.Exit(1)
	}
	stdout.Flush()
}

func env(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// tokenStore is platform_auth.py: read the file until a token is found,
// then cache it.
type tokenStore struct {
	path string
	mu   sync.Mutex
	tok  string
}

func (t *tokenStore) get() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tok != "" {
		return t.tok
	}
	b, err := os.ReadFile(t.path)
	if err != nil {
		return ""
	}
	t.tok = strings.TrimSpace(string(b))
	return t.tok
}

// save writes a token different from the current one in place.
func (t *tokenStore) save(tok string) (bool, error) {
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return false, errors.New("refusing to save empty token")
	}
	if t.get() == tok {
		return false, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := os.MkdirAll(filepath.Dir(t.path), 0o755); err != nil {
		return false, err
	}
	f, err := os.OpenFile(t.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return false, err
	}
	_, err = f.WriteString(tok)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, err
	}
	t.tok = tok
	return true, nil
}

func run(ctx context.Context) error {
	id := os.Getenv("WORKSPACE_ID")
	if id == "" {
		return errors.New("FATAL: WORKSPACE_ID env var is not set; aborting")
	}
	if p := os.Getenv("STANDIN_EXEC_LOG"); p != "" {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err == nil {
			fmt.Fprintf(f, "exec pid %d\n", os.Getpid())
			_ = f.Close()
		}
	}
	platform := strings.TrimRight(env("PLATFORM_URL", "http://localhost:8080"), "/")
	cfgDir := env("WORKSPACE_CONFIG_PATH", "/configs")
	raw, err := os.ReadFile(filepath.Join(cfgDir, "config.yaml"))
	if err != nil {
		return fmt.Errorf("config.yaml not found in %s: %w", cfgDir, err)
	}
	var cfg config
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		return fmt.Errorf("parse config.yaml: %w", err)
	}
	if cfg.A2A.Port == 0 {
		cfg.A2A.Port = 8000
	}
	hbEvery, err := time.ParseDuration(env("STANDIN_HEARTBEAT_INTERVAL", "30s"))
	if err != nil || hbEvery <= 0 {
		return fmt.Errorf("STANDIN_HEARTBEAT_INTERVAL: %q is not a positive duration", os.Getenv("STANDIN_HEARTBEAT_INTERVAL"))
	}
	tokens := &tokenStore{path: filepath.Join(env("CONFIGS_DIR", "/configs"), ".auth_token")}

	host := env("HOSTNAME", "127.0.0.1")
	url := "http://" + net.JoinHostPort(host, strconv.Itoa(cfg.A2A.Port))
	card := map[string]any{
		"name": cfg.Name, "description": cfg.Description, "version": cfg.Version, "url": url,
		"skills":       []map[string]any{{"id": "echo", "name": "Echo", "description": "stand-in", "tags": []string{"test"}}},
		"capabilities": map[string]bool{"streaming": false, "pushNotifications": false},
	}
	if name := os.Getenv("STANDIN_ECHO_ENV"); name != "" {
		stdout.Printf("env %s=%s\n", name, os.Getenv(name))
	}

	// Register before listening, as main.py does.
	client := &http.Client{Timeout: 10 * time.Second}
	code, body, err := post(ctx, client, platform+"/registry/register", tokens.get(),
		map[string]any{"id": id, "url": url, "agent_card": card})
	if err != nil {
		stdout.Printf("Warning: failed to register with platform: %v\n", err)
	} else {
		stdout.Printf("Registered with platform: %d\n", code)
		if code == http.StatusOK {
			var resp struct {
				AuthToken string `json:"auth_token"`
			}
			if json.Unmarshal(body, &resp) == nil && resp.AuthToken != "" {
				if saved, err := tokens.save(resp.AuthToken); err != nil {
					stdout.Printf("Warning: couldn't parse register response for token: %v\n", err)
				} else if saved {
					stdout.Printf("Saved workspace auth token (prefix=%s…)\n", resp.AuthToken[:min(8, len(resp.AuthToken))])
				}
			}
		}
	}

	start := time.Now()
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		heartbeat(ctx, client, platform, id, tokens, hbEvery, start)
	}()

	ln, err := net.Listen("tcp", net.JoinHostPort("0.0.0.0", strconv.Itoa(cfg.A2A.Port)))
	if err != nil {
		return fmt.Errorf("listen on a2a.port %d: %w", cfg.A2A.Port, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/agent-card.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(card)
		stdout.Printf("INFO:     %s - \"GET %s HTTP/1.1\" 200 OK\n", r.RemoteAddr, r.URL.Path)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	fmt.Fprintf(os.Stderr, "INFO:     Uvicorn running on http://%s (Press CTRL+C to quit)\n", ln.Addr())

	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "INFO:     Shutting down")
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shut)
	<-hbDone
	return nil
}

// heartbeat sends one at once, then one every interval, until ctx ends.
func heartbeat(ctx context.Context, client *http.Client, platform, id string, tokens *tokenStore, every time.Duration, start time.Time) {
	t := time.NewTicker(every)
	defer t.Stop()
	last := 0
	for {
		code, _, _ := post(ctx, client, platform+"/registry/heartbeat", tokens.get(), map[string]any{
			"workspace_id": id, "error_rate": 0, "sample_error": "", "active_tasks": 0,
			"uptime_seconds": int(time.Since(start).Seconds()), "current_task": ""})
		if code != last && code != http.StatusUnauthorized && code != 0 { // 401s are silent, as in heartbeat.py
			stdout.Printf("Heartbeat: %d\n", code)
		}
		last = code
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// post sends v as JSON with the bearer token (if any) and returns the status
// and at most 64 KiB of body, or the transport error.
func post(ctx context.Context, c *http.Client, url, token string, v any) (int, []byte, error) {
	b, _ := json.Marshal(v)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) && ue.Unwrap() != nil {
			err = ue.Unwrap()
		}
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, body, nil
}
