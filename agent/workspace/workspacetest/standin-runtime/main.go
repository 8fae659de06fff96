//go:build unix

// Command standin-runtime behaves like the workspace runtime (`molecule-runtime`)
// as far as the agent and the tenant platform can tell (interop §1, §2):
//
//   - it reads $WORKSPACE_CONFIG_PATH/config.yaml and exits 1 without it;
//   - it reads the bearer token from $CONFIGS_DIR/.auth_token (may be absent);
//   - it serves GET /.well-known/agent-card.json on 0.0.0.0:<a2a.port>;
//   - it POSTs $PLATFORM_URL/registry/register once, with the real
//     RegisterPayload and "Authorization: Bearer <token>", prints
//     "Registered with platform: <status>" and, like the real runtime, ignores a
//     non-200 answer and keeps running (main.py registers once and never exits
//     on a failed register); a returned auth_token is saved (0600) when none
//     existed;
//   - it POSTs /registry/heartbeat every $STANDIN_HEARTBEAT_INTERVAL (default
//     30s, the real cadence), 401s being silent as in heartbeat.py;
//   - it exits 0 on SIGTERM;
//   - for redaction tests, it prints NAME=value of the variable named by
//     $STANDIN_ECHO_ENV, as a runtime dumping its environment would.
//
// Unlike the real runtime it never prints any part of the token.
package main

import (
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

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "RUNTIME CRASHED:", err)
		os.Exit(1)
	}
}

func env(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func run(ctx context.Context) error {
	id := os.Getenv("WORKSPACE_ID")
	if id == "" {
		return errors.New("WORKSPACE_ID is required")
	}
	platform := strings.TrimRight(env("PLATFORM_URL", "http://localhost:8080"), "/")
	cfgDir := env("WORKSPACE_CONFIG_PATH", "/configs")
	tokDir := env("CONFIGS_DIR", "/configs")
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
	tokPath := filepath.Join(tokDir, ".auth_token")
	token := readToken(tokPath)

	host := env("HOSTNAME", "127.0.0.1")
	url := "http://" + net.JoinHostPort(host, strconv.Itoa(cfg.A2A.Port))
	card := map[string]any{
		"name": cfg.Name, "description": cfg.Description, "version": cfg.Version, "url": url,
		"skills":       []map[string]any{{"id": "echo", "name": "Echo", "description": "stand-in", "tags": []string{"test"}}},
		"capabilities": map[string]bool{"streaming": false, "pushNotifications": false},
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("0.0.0.0", strconv.Itoa(cfg.A2A.Port)))
	if err != nil {
		return fmt.Errorf("listen on a2a.port %d: %w", cfg.A2A.Port, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/agent-card.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(card)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	fmt.Printf("Workspace %s serving A2A on %s\n", id, ln.Addr())
	if name := os.Getenv("STANDIN_ECHO_ENV"); name != "" {
		fmt.Printf("env %s=%s\n", name, os.Getenv(name))
	}

	client := &http.Client{Timeout: 10 * time.Second}
	code, body := post(ctx, client, platform+"/registry/register", token,
		map[string]any{"id": id, "url": url, "agent_card": card})
	fmt.Printf("Registered with platform: %d\n", code)
	if code == http.StatusOK && token == "" {
		var resp struct {
			AuthToken string `json:"auth_token"`
		}
		if json.Unmarshal(body, &resp) == nil && resp.AuthToken != "" {
			if err := saveToken(tokPath, resp.AuthToken); err != nil {
				fmt.Println("could not save the issued auth token:", err)
			} else {
				token = resp.AuthToken
				fmt.Println("Saved the auth token issued by the platform")
			}
		}
	}

	start := time.Now()
	t := time.NewTicker(hbEvery)
	defer t.Stop()
	last := 0
	for {
		select {
		case <-ctx.Done():
			shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(shut)
			fmt.Println("Shutting down")
			return nil
		case <-t.C:
		}
		code, _ := post(ctx, client, platform+"/registry/heartbeat", token, map[string]any{
			"workspace_id": id, "error_rate": 0, "active_tasks": 0,
			"uptime_seconds": int(time.Since(start).Seconds()), "current_task": ""})
		if code != last && code != http.StatusUnauthorized { // 401s are silent, as in heartbeat.py
			fmt.Printf("Heartbeat: %d\n", code)
		}
		last = code
	}
}

func readToken(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func saveToken(path, tok string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(tok), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// post sends v as JSON with the bearer token (if any) and returns the status
// (0 when the platform could not be reached) and at most 64 KiB of body.
func post(ctx context.Context, c *http.Client, url, token string, v any) (int, []byte) {
	b, _ := json.Marshal(v)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return 0, nil
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		fmt.Println("platform unreachable:", errors.Unwrap(err))
		return 0, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, body
}
