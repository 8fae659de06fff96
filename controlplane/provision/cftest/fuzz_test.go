package cftest

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// FuzzBodies feeds arbitrary JSON bodies to the create and configure
// handlers: no input may panic, and what is stored keeps the API's rules.
func FuzzBodies(f *testing.F) {
	f.Add(`{"name":"t","tunnel_secret":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=","config_src":"cloudflare"}`,
		`{"config":{"ingress":[{"hostname":"a.molecule.test","service":"http://localhost:8080"},{"service":"http_status:404"}]}}`,
		`{"type":"CNAME","name":"acme","content":"x.cfargotunnel.com","proxied":true,"ttl":1}`)
	f.Add(`{"name":""}`, `{"config":{"ingress":[]}}`, `{"type":"TXT","name":"@","content":"v","proxied":true}`)
	f.Fuzz(func(t *testing.T, tunnelBody, configBody, recordBody string) {
		s := &Server{tunnels: map[string]*tunnel{}, records: map[string]*record{}, now: time.Now}
		out, _, f := s.createTunnel(httptest.NewRequest("POST", "/", nil), []byte(tunnelBody))
		if f == nil {
			id := out.(map[string]any)["id"].(string)
			r := httptest.NewRequest("PUT", "/", nil)
			r.SetPathValue("id", id)
			if _, _, f := s.putConfig(r, []byte(configBody)); f == nil {
				tun := s.tunnels[id]
				if len(tun.secret) < 32 || tun.config == nil {
					t.Fatalf("stored tunnel breaks the rules: secret %d bytes, config %s", len(tun.secret), tun.config)
				}
			}
		}
		if out, _, f := s.createRecord(nil, []byte(recordBody)); f == nil {
			name := out.(map[string]any)["name"].(string)
			if name != ZoneName && !strings.HasSuffix(name, "."+ZoneName) {
				t.Fatalf("stored record %q outside the zone", name)
			}
		}
	})
}
