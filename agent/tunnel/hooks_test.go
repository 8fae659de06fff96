//go:build unix

package tunnel

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/molecule-ai/molecule-agent/agent/supervisor"
)

func TestCheckToken(t *testing.T) {
	t.Parallel()
	valid := b64(validJSON())
	const where = "/molecule/prod/tenants/acme/tunnel-token"
	errPrepare := errors.New("secret tunnel-token missing")
	tests := []struct {
		name        string
		env         []string
		prepareErr  error
		wantBlocked string // substring of the BlockedError; "" = success
		wantErr     error
	}{
		{"valid token", []string{"PATH=/bin", TokenEnv + "=" + valid}, nil, "", nil},
		{"malformed token", []string{TokenEnv + "=bm9wZQ=="}, nil, "tunnel token under " + where + " is not a cloudflared token", nil},
		{"no token in env", []string{"PATH=/bin"}, nil, "no TUNNEL_TOKEN", nil},
		{"prepare fails", nil, errPrepare, "", errPrepare},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := NewProbe(DefaultMetricsPort, nil)
			prepare := CheckToken(where, p, func(context.Context) ([]string, error) { return tt.env, tt.prepareErr })
			env, err := prepare(context.Background())
			switch {
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error = %v, want %v", err, tt.wantErr)
				}
			case tt.wantBlocked != "":
				var be *supervisor.BlockedError
				if !errors.As(err, &be) || !strings.Contains(be.Reason, tt.wantBlocked) {
					t.Fatalf("error = %v, want a BlockedError containing %q", err, tt.wantBlocked)
				}
				for _, kv := range tt.env {
					if v, ok := strings.CutPrefix(kv, TokenEnv+"="); ok && strings.Contains(err.Error(), v) {
						t.Errorf("error %q shows the token", err)
					}
				}
				if f := report(p); f.Tunnel != nil && f.Tunnel.ID != "" {
					t.Errorf("Report = %+v, want no tunnel ID after a bad token", f.Tunnel)
				}
			default:
				if err != nil || !slices.Equal(env, tt.env) {
					t.Fatalf("prepare = %v, %v; want %v, nil", env, err, tt.env)
				}
				if f := report(p); f.Tunnel == nil || f.Tunnel.ID != testTunnelID {
					t.Errorf("Report tunnel = %+v, want ID %q", f.Tunnel, testTunnelID)
				}
			}
		})
	}
}

func TestProbeReport(t *testing.T) {
	t.Parallel()
	p := NewProbe(serve(t, 503, `{"status":503,"readyConnections":0,"connectorId":"c0"}`), nil)
	if got := report(p); got.Tunnel != nil {
		t.Errorf("Report before anything = %+v, want no tunnel facet", got.Tunnel)
	}
	p.SetTunnelID(testTunnelID)
	if _, _, err := p.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := supervisor.TunnelFacet{ID: testTunnelID, ConnectorID: "c0", ReadyConnections: 0}
	if got := report(p); got.Tunnel == nil || *got.Tunnel != want {
		t.Errorf("Report = %+v, want %+v", got.Tunnel, want)
	}
}

func report(p *Probe) supervisor.Facets {
	var f supervisor.Facets
	p.Report(&f)
	return f
}
