package cftest_test

import (
	"encoding/base64"
	"errors"
	"net/http"
	"slices"
	"testing"

	"github.com/cloudflare/cloudflare-go/v6/dns"
	"github.com/cloudflare/cloudflare-go/v6/option"
	"github.com/cloudflare/cloudflare-go/v6/zero_trust"
	"go.uber.org/goleak"

	"github.com/molecule-ai/molecule-agent/agent/tunnel"
	"github.com/molecule-ai/molecule-agent/controlplane/provision/cftest"
)

// The SDK's request fields are param.Field values, an internal type that
// only the root package's F builds, and the root package imports every
// Cloudflare service; the tests set Value and Present directly instead.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func opts(t *testing.T, s *cftest.Server, token string) []option.RequestOption {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return []option.RequestOption{option.WithBaseURL(s.URL), option.WithAPIToken(token),
		option.WithHTTPClient(&http.Client{Transport: tr}), option.WithMaxRetries(0)}
}

func apiCodes(err error) (int, []int64) {
	var ae *zero_trust.Error
	if !errors.As(err, &ae) {
		return 0, nil
	}
	var codes []int64
	for _, e := range ae.Errors {
		codes = append(codes, e.Code)
	}
	return ae.StatusCode, codes
}

func newTunnel(name, secret string) zero_trust.TunnelCloudflaredNewParams {
	var p zero_trust.TunnelCloudflaredNewParams
	p.AccountID.Value, p.AccountID.Present = cftest.AccountID, true
	p.Name.Value, p.Name.Present = name, true
	p.TunnelSecret.Value, p.TunnelSecret.Present = secret, true
	p.ConfigSrc.Value, p.ConfigSrc.Present = zero_trust.TunnelCloudflaredNewParamsConfigSrcCloudflare, true
	return p
}

func ingress(rules ...[2]string) zero_trust.TunnelCloudflaredConfigurationUpdateParams {
	var p zero_trust.TunnelCloudflaredConfigurationUpdateParams
	p.AccountID.Value, p.AccountID.Present = cftest.AccountID, true
	var in []zero_trust.TunnelCloudflaredConfigurationUpdateParamsConfigIngress
	for _, r := range rules {
		var x zero_trust.TunnelCloudflaredConfigurationUpdateParamsConfigIngress
		if r[0] != "" {
			x.Hostname.Value, x.Hostname.Present = r[0], true
		}
		x.Service.Value, x.Service.Present = r[1], true
		in = append(in, x)
	}
	var c zero_trust.TunnelCloudflaredConfigurationUpdateParamsConfig
	c.Ingress.Value, c.Ingress.Present = in, true
	p.Config.Value, p.Config.Present = c, true
	return p
}

func TestTunnelLifecycle(t *testing.T) {
	t.Parallel()
	s := cftest.New(t)
	tunnels := zero_trust.NewTunnelCloudflaredService(opts(t, s, cftest.Token)...)
	secret := base64.StdEncoding.EncodeToString(make([]byte, 32))

	var acct zero_trust.TunnelCloudflaredGetParams
	acct.AccountID.Value, acct.AccountID.Present = cftest.AccountID, true
	created, err := tunnels.New(t.Context(), newTunnel("molecule-acme", secret))
	if err != nil {
		t.Fatal(err)
	}
	if created.Name != "molecule-acme" || created.Status != "inactive" || created.ID == "" {
		t.Errorf("created = %+v", created)
	}
	_, err = tunnels.New(t.Context(), newTunnel("molecule-acme", secret))
	if status, codes := apiCodes(err); status != http.StatusConflict || !slices.Contains(codes, 1013) {
		t.Errorf("duplicate name: %v, want 409 code 1013", err)
	}
	if _, err = tunnels.New(t.Context(), newTunnel("short", base64.StdEncoding.EncodeToString(make([]byte, 16)))); err == nil {
		t.Error("a 16-byte tunnel secret was accepted")
	}

	tok, err := tunnels.Token.Get(t.Context(), created.ID, zero_trust.TunnelCloudflaredTokenGetParams(acct))
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := tunnel.ParseToken(*tok)
	if err != nil || parsed.TunnelID != created.ID || parsed.AccountTag != cftest.AccountTag || parsed.Secret.Reveal() != secret {
		t.Errorf("token parses to %+v, %v; want the tunnel, account and secret", parsed, err)
	}

	if _, err := tunnels.Configurations.Update(t.Context(), created.ID, ingress([2]string{"acme.molecule.test", "http://localhost:8080"}, [2]string{"", "http_status:404"})); err != nil {
		t.Fatal(err)
	}
	got, err := tunnels.Configurations.Get(t.Context(), created.ID, zero_trust.TunnelCloudflaredConfigurationGetParams(acct))
	if err != nil || got.Version != 1 || len(got.Config.Ingress) != 2 || got.Config.Ingress[0].Hostname != "acme.molecule.test" {
		t.Errorf("configuration = %+v, %v", got, err)
	}
	if _, err := tunnels.Configurations.Update(t.Context(), created.ID, ingress([2]string{"acme.molecule.test", "http://localhost:8080"})); err == nil {
		t.Error("ingress without a catch-all accepted")
	}

	s.Connect(created.ID, 4)
	one, err := tunnels.Get(t.Context(), created.ID, acct)
	if err != nil || one.Status != "healthy" {
		t.Errorf("connected tunnel = %+v, %v; want healthy", one, err)
	}
	conns, err := tunnels.Connections.Get(t.Context(), created.ID, zero_trust.TunnelCloudflaredConnectionGetParams(acct))
	if err != nil || len(conns.Result) != 1 || len(conns.Result[0].Conns) != 4 {
		t.Errorf("connections = %+v, %v; want one connector with 4 connections", conns, err)
	}
	_, err = tunnels.Delete(t.Context(), created.ID, zero_trust.TunnelCloudflaredDeleteParams(acct))
	if _, codes := apiCodes(err); !slices.Contains(codes, 1022) {
		t.Errorf("delete with live connections: %v, want code 1022", err)
	}
	if _, err := tunnels.Connections.Delete(t.Context(), created.ID, zero_trust.TunnelCloudflaredConnectionDeleteParams{AccountID: acct.AccountID}); err != nil {
		t.Fatal(err)
	}
	if _, err := tunnels.Delete(t.Context(), created.ID, zero_trust.TunnelCloudflaredDeleteParams(acct)); err != nil {
		t.Fatal(err)
	}

	byName := zero_trust.TunnelCloudflaredListParams{AccountID: acct.AccountID}
	byName.Name.Value, byName.Name.Present = "molecule-acme", true
	all := tunnels.ListAutoPaging(t.Context(), byName)
	n := 0
	for all.Next() {
		n++
		if all.Current().DeletedAt.IsZero() {
			t.Errorf("listed tunnel not marked deleted: %+v", all.Current())
		}
	}
	if all.Err() != nil || n != 1 {
		t.Errorf("list by name without is_deleted: %d, %v; want the deleted tunnel still listed", n, all.Err())
	}
	byName.IsDeleted.Value, byName.IsDeleted.Present = false, true
	live, err := tunnels.List(t.Context(), byName)
	if err != nil || len(live.Result) != 0 {
		t.Errorf("list is_deleted=false = %v, %v; want none", live, err)
	}
}

func cname(name, target string) dns.CNAMERecordParam {
	var b dns.CNAMERecordParam
	b.Name.Value, b.Name.Present = name, true
	b.Type.Value, b.Type.Present = dns.CNAMERecordTypeCNAME, true
	b.Content.Value, b.Content.Present = target, true
	b.Proxied.Value, b.Proxied.Present = true, true
	b.TTL.Value, b.TTL.Present = dns.TTL1, true
	return b
}

func TestDNSRecords(t *testing.T) {
	t.Parallel()
	s := cftest.New(t)
	records := dns.NewRecordService(opts(t, s, cftest.Token)...)
	var zone dns.RecordGetParams
	zone.ZoneID.Value, zone.ZoneID.Present = cftest.ZoneID, true

	rec, err := records.New(t.Context(), dns.RecordNewParams{ZoneID: zone.ZoneID, Body: cname("acme", "abc.cfargotunnel.com")})
	if err != nil {
		t.Fatal(err)
	}
	if rec.Name != "acme.molecule.test" || !rec.Proxied || rec.Content != "abc.cfargotunnel.com" {
		t.Errorf("record = %+v, want acme.molecule.test proxied to abc.cfargotunnel.com", rec)
	}
	_, err = records.New(t.Context(), dns.RecordNewParams{ZoneID: zone.ZoneID, Body: cname("acme.molecule.test", "def.cfargotunnel.com")})
	if _, codes := apiCodes(err); !slices.Contains(codes, 81053) {
		t.Errorf("second CNAME on the name: %v, want code 81053", err)
	}
	list := dns.RecordListParams{ZoneID: zone.ZoneID}
	var exact dns.RecordListParamsName
	exact.Exact.Value, exact.Exact.Present = "acme.molecule.test", true
	list.Name.Value, list.Name.Present = exact, true
	list.Type.Value, list.Type.Present = dns.RecordListParamsTypeCNAME, true
	found, err := records.List(t.Context(), list)
	if err != nil || len(found.Result) != 1 || found.Result[0].ID != rec.ID {
		t.Fatalf("list by name = %+v, %v", found, err)
	}
	upd, err := records.Update(t.Context(), rec.ID, dns.RecordUpdateParams{ZoneID: zone.ZoneID, Body: cname("acme.molecule.test", "def.cfargotunnel.com")})
	if err != nil || upd.Content != "def.cfargotunnel.com" {
		t.Errorf("update = %+v, %v", upd, err)
	}
	if _, err := records.Delete(t.Context(), rec.ID, dns.RecordDeleteParams(zone)); err != nil {
		t.Fatal(err)
	}
	_, err = records.Delete(t.Context(), rec.ID, dns.RecordDeleteParams(zone))
	if status, codes := apiCodes(err); status != http.StatusNotFound || !slices.Contains(codes, 81044) {
		t.Errorf("delete twice: %v, want 404 code 81044", err)
	}
	if len(s.Records()) != 0 {
		t.Errorf("records left: %+v", s.Records())
	}
}

func TestFaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		fault      cftest.Fault
		token      string
		wantStatus int
		wantCode   int64
	}{
		{name: "rate limited", fault: cftest.RateLimited, token: cftest.Token, wantStatus: 429, wantCode: 971},
		{name: "5xx", fault: cftest.ServerError, token: cftest.Token, wantStatus: 500, wantCode: 10001},
		{name: "502 html", fault: cftest.BadGateway, token: cftest.Token, wantStatus: 502},
		{name: "forbidden", fault: cftest.Forbidden, token: cftest.Token, wantStatus: 403, wantCode: 10000},
		{name: "wrong token", token: "nope", wantStatus: 400, wantCode: 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := cftest.New(t)
			if tt.fault != 0 {
				s.Fail(cftest.OpListTunnels, tt.fault)
			}
			tunnels := zero_trust.NewTunnelCloudflaredService(opts(t, s, tt.token)...)
			var p zero_trust.TunnelCloudflaredListParams
			p.AccountID.Value, p.AccountID.Present = cftest.AccountID, true
			_, err := tunnels.List(t.Context(), p)
			status, codes := apiCodes(err)
			if status != tt.wantStatus || (tt.wantCode != 0 && !slices.Contains(codes, tt.wantCode)) {
				t.Fatalf("error = %v (status %d codes %v), want %d code %d", err, status, codes, tt.wantStatus, tt.wantCode)
			}
			if tt.fault != 0 {
				if _, err := tunnels.List(t.Context(), p); err != nil {
					t.Errorf("the fault outlived its one call: %v", err)
				}
			}
		})
	}
}
