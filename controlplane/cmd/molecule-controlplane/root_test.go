package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

func TestAdminToken(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tok")
	empty := filepath.Join(dir, "empty")
	_ = os.WriteFile(file, []byte(" from-file \n"), 0o600)
	_ = os.WriteFile(empty, []byte("\n"), 0o600)
	tests := []struct {
		name, path, env, want, wantErr string
	}{
		{"file wins", file, "from-env", "from-file", ""},
		{"env", "", "from-env", "from-env", ""},
		{"none", "", "", "", "MOLECULE_CP_ADMIN_TOKEN"},
		{"empty file", empty, "", "", "is empty"},
		{"missing file", filepath.Join(dir, "nope"), "", "", "--admin-token-file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := adminToken(tt.path, env{adminToken: tt.env})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got.Reveal() != tt.want {
				t.Errorf("adminToken = %q, %v; want %q", got.Reveal(), err, tt.want)
			}
		})
	}
}

func TestNoAdminTokenFlag(t *testing.T) {
	err := run(context.Background(), []string{"serve", "--admin-token", "x"}, env{}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "unknown flag") {
		t.Errorf("serve --admin-token err = %v, want unknown flag (tokens never come from argv)", err)
	}
}

func TestServeRefusesBadFlags(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"serve", "--db", "mysql://x"}, "--db"},
		{[]string{"serve", "--db", "sqlite://" + filepath.Join(t.TempDir(), "cp.db"), "--flush-window", "10s"}, "flush window"},
		{[]string{"serve", "--aws-cert", "/nonexistent.pem"}, "--aws-cert"},
		{[]string{"serve", "--log-level", "loud"}, "--log-level"},
		{[]string{"serve", "--tls-cert", "/nonexistent.crt"}, "--tls-cert and --tls-key go together"},
		{[]string{"serve", "--tls-cert", "/nonexistent.crt", "--tls-key", "/nonexistent.key"}, "/nonexistent.crt"},
	}
	for _, tt := range tests {
		err := run(context.Background(), tt.args, env{adminToken: "t"}, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("run %v err = %v, want %q", tt.args, err, tt.wantErr)
		}
	}
}

func TestDevWritesTokenFilesAndPrintsNoToken(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	var out syncBuf
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"dev", "--dir", dir, "--listen", "127.0.0.1:0", "--log-level", "error"}, env{}, &out)
	}()
	deadline := time.Now().Add(testenv.Short)
	for !strings.Contains(out.String(), "enrollment token file") {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("dev printed no enrollment token file line; err %v; output:\n%s", <-done, out.String())
		}
		time.Sleep(10 * time.Millisecond) // polling
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("dev after cancel = %v, want nil", err)
	}
	if !strings.Contains(out.String(), "control plane: http://127.0.0.1:") {
		t.Errorf("dev output lacks the URL:\n%s", out.String())
	}
	for _, name := range []string{"admin-token", "enrollment-token"} {
		p := filepath.Join(dir, name)
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, mode %v; want 0600", name, err, fi.Mode().Perm())
		}
		b, _ := os.ReadFile(p)
		tok := strings.TrimSpace(string(b))
		if len(tok) < 20 || strings.Contains(out.String(), tok) {
			t.Errorf("%s: token of %d bytes, printed: %v", name, len(tok), strings.Contains(out.String(), tok))
		}
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }
