//go:build unix

package tunnel

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/config"
)

func TestUnitArgs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		opts      UnitOptions
		wantCmd   string
		wantArgs  []string
		wantEnv   string
		wantReady string
		wantGrace time.Duration
	}{
		{
			name:      "defaults",
			wantCmd:   "/usr/local/bin/cloudflared",
			wantArgs:  []string{"tunnel", "--no-autoupdate", "--metrics", "127.0.0.1:20241", "--grace-period", "30s", "run"},
			wantEnv:   "secret:tunnel-token",
			wantReady: "http://127.0.0.1:20241/ready",
			wantGrace: 35 * time.Second,
		},
		{
			name:      "test edge goes before run",
			opts:      UnitOptions{Binary: "/tmp/bin/cloudflared", MetricsPort: 31000, GracePeriod: 2 * time.Second, SecretName: "cf/token", Edge: []string{"127.0.0.1:1", "[::1]:1"}},
			wantCmd:   "/tmp/bin/cloudflared",
			wantArgs:  []string{"tunnel", "--no-autoupdate", "--metrics", "127.0.0.1:31000", "--grace-period", "2s", "--edge", "127.0.0.1:1", "--edge", "[::1]:1", "run"},
			wantEnv:   "secret:cf/token",
			wantReady: "http://127.0.0.1:31000/ready",
			wantGrace: 7 * time.Second,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u, err := tt.opts.Unit()
			if err != nil {
				t.Fatalf("Unit: %v", err)
			}
			if u.Command != tt.wantCmd {
				t.Errorf("Command = %q, want %q", u.Command, tt.wantCmd)
			}
			if !slices.Equal(u.Args, tt.wantArgs) {
				t.Errorf("Args = %q, want %q", u.Args, tt.wantArgs)
			}
			if got := u.Env[TokenEnv]; got != tt.wantEnv || len(u.Env) != 1 {
				t.Errorf("Env = %v, want only %s=%s", u.Env, TokenEnv, tt.wantEnv)
			}
			if u.Ready == nil || u.Ready.HTTP != tt.wantReady || u.Ready.Status != 200 {
				t.Errorf("Ready = %+v, want GET %s answering 200", u.Ready, tt.wantReady)
			}
			if u.Stop.Grace.Duration != tt.wantGrace || u.Stop.Signal != "SIGTERM" {
				t.Errorf("Stop = %+v, want SIGTERM then %v", u.Stop, tt.wantGrace)
			}
			if !slices.Equal(u.Restart.NoRestartExitCodes, []int{255}) {
				t.Errorf("NoRestartExitCodes = %v, want [255]", u.Restart.NoRestartExitCodes)
			}
			if u.Builtin != Builtin || u.Kind != config.KindExec || u.Name != "cloudflared" {
				t.Errorf("Builtin, Kind, Name = %q, %q, %q; want cloudflared, exec, cloudflared", u.Builtin, u.Kind, u.Name)
			}
			for _, a := range u.Args {
				if strings.Contains(a, "token") || strings.Contains(a, config.SecretPrefix) {
					t.Errorf("argument %q mentions the token; it belongs in the environment", a)
				}
			}
			// The unit must pass the agent's own validation once defaulted.
			c := config.Config{StateDir: "/var/lib/x", RunDir: "/run/x", Units: []config.Unit{u}}
			c.ApplyDefaults()
			if err := c.Validate(); err != nil {
				t.Errorf("config.Validate of the unit: %v", err)
			}
		})
	}
}

func TestUnitOptionErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts UnitOptions
		want string
	}{
		{"port too large", UnitOptions{MetricsPort: 70000}, "metrics port 70000"},
		{"negative port", UnitOptions{MetricsPort: -1}, "metrics port -1"},
		{"grace too short", UnitOptions{GracePeriod: time.Millisecond}, "grace period 1ms"},
		{"edge by name", UnitOptions{Edge: []string{"region1.v2.argotunnel.com:7844"}}, `edge "region1.v2.argotunnel.com:7844"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := tt.opts.Unit()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Unit error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}
