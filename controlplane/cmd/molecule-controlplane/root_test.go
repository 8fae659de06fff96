package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
	err := run(context.Background(), []string{"serve", "--admin-token", "x"}, env{})
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
	}
	for _, tt := range tests {
		err := run(context.Background(), tt.args, env{adminToken: "t"})
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("run %v err = %v, want %q", tt.args, err, tt.wantErr)
		}
	}
}
