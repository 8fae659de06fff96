package provision

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/cloudflare/cloudflare-go/v6/dns"
	"github.com/cloudflare/cloudflare-go/v6/option"
	"github.com/cloudflare/cloudflare-go/v6/packages/pagination"
	"github.com/cloudflare/cloudflare-go/v6/shared"
	"github.com/cloudflare/cloudflare-go/v6/zero_trust"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
)

// The SDK's request fields are param.Field values, an internal type only
// the root package's F builds, and the root package imports every
// Cloudflare service (minutes of compiling); Value and Present are set
// directly instead.

// Origin is the service a tenant's hostname routes to on its host.
const Origin = "http://localhost:8080"

// tunnelSuffix is the CNAME target domain of a Cloudflare Tunnel.
const tunnelSuffix = ".cfargotunnel.com"

// Cloudflare error codes the backend tells apart.
const (
	cfTunnelNameTaken   = 1013
	cfTunnelNotFound    = 1003
	cfRecordNotFound    = 81044
	cfRecordNameTaken   = 81053
	cfRecordIdentical   = 81058
	cfAuthError         = 10000
	cfUnauthorizedScope = 9109
)

// CloudflareConfig is the account and zone tenants are served from.
type CloudflareConfig struct {
	// AccountID owns the tunnels; it is also the token's account tag.
	AccountID string
	// ZoneID holds the DNS records.
	ZoneID string
	// Domain is the zone's domain: a tenant is served at <slug>.<Domain>.
	Domain string
}

// Cloudflare creates and removes tenants' tunnels and hostnames.
type Cloudflare struct {
	tunnels *zero_trust.TunnelCloudflaredService
	records *dns.RecordService
	cfg     CloudflareConfig
	retry   Retry
	log     *slog.Logger
}

// NewCloudflare returns the Cloudflare backend. opts carry the API token
// (option.WithAPIToken) and, in tests, option.WithBaseURL and
// option.WithHTTPClient; the SDK's retries are turned off (Retry governs).
// log may be nil.
func NewCloudflare(cfg CloudflareConfig, retry Retry, log *slog.Logger, opts ...option.RequestOption) (*Cloudflare, error) {
	switch {
	case cfg.AccountID == "":
		return nil, errors.New("cloudflare: AccountID is required")
	case cfg.ZoneID == "":
		return nil, errors.New("cloudflare: ZoneID is required")
	case cfg.Domain == "":
		return nil, errors.New("cloudflare: Domain is required (tenants are served at <slug>.<domain>)")
	}
	opts = append(slices.Clone(opts), option.WithMaxRetries(0))
	return &Cloudflare{
		tunnels: zero_trust.NewTunnelCloudflaredService(opts...), records: dns.NewRecordService(opts...),
		cfg: cfg, retry: retry, log: orDiscard(log).With("backend", "cloudflare"),
	}, nil
}

// Hostname is the public hostname of the tenant slug.
func (c *Cloudflare) Hostname(slug string) string { return slug + "." + c.cfg.Domain }

// Tunnel is a tenant's tunnel. Token is what cloudflared runs with.
type Tunnel struct {
	ID    string
	Name  string
	Token secret.Secret
	// Created is true when this call created the tunnel.
	Created bool
}

// LogValue implements slog.LogValuer: the ID and name, never the token.
func (t Tunnel) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", t.ID), slog.String("name", t.Name))
}

// TunnelToken derives a tunnel's token the way cloudflared reads it
// (agent/tunnel/token.go): standard base64 of the JSON {"a": account tag,
// "s": base64 secret, "t": tunnel ID}.
func TunnelToken(accountTag, tunnelID string, tunnelSecret []byte) secret.Secret {
	b, _ := json.Marshal(struct {
		A string `json:"a"`
		S []byte `json:"s"`
		T string `json:"t"`
	}{accountTag, tunnelSecret, tunnelID})
	return secret.New(base64.StdEncoding.EncodeToString(b))
}

// EnsureTunnel returns the live tunnel named name, creating it (remotely
// managed, with a fresh 32-byte secret) when there is none. A create whose
// answer was lost is found by name on the next pass.
func (c *Cloudflare) EnsureTunnel(ctx context.Context, name string) (Tunnel, error) {
	var t Tunnel
	err := c.retry.do(ctx, c.log, "ensure tunnel", classifyEnsure(cfTunnelNameTaken), func(ctx context.Context) (err error) {
		t, err = c.findOrCreateTunnel(ctx, name)
		return err
	})
	return t, err
}

func (c *Cloudflare) findOrCreateTunnel(ctx context.Context, name string) (Tunnel, error) {
	id, found, err := c.FindTunnel(ctx, name)
	if err != nil {
		return Tunnel{}, err
	}
	if !found {
		return c.createTunnel(ctx, name)
	}
	tok, err := c.token(ctx, id)
	if err != nil {
		return Tunnel{}, err
	}
	c.log.Info("tunnel found", "tunnel", id, "name", name)
	return Tunnel{ID: id, Name: name, Token: tok}, nil
}

// classifyEnsure retries a find-or-create whose create failed in a way
// that may have created it (a 5xx, a lost answer) or raced another
// creator (the name taken): the next pass finds it.
func classifyEnsure(taken int64) func(error) verdict {
	return func(err error) verdict {
		if cfHasCode(err, taken) {
			return verdict{retry: true}
		}
		return classifyCF(err)
	}
}

func (c *Cloudflare) createTunnel(ctx context.Context, name string) (Tunnel, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return Tunnel{}, fmt.Errorf("tunnel secret: %w", err)
	}
	var p zero_trust.TunnelCloudflaredNewParams
	p.AccountID.Value, p.AccountID.Present = c.cfg.AccountID, true
	p.Name.Value, p.Name.Present = name, true
	p.TunnelSecret.Value, p.TunnelSecret.Present = base64.StdEncoding.EncodeToString(raw), true
	p.ConfigSrc.Value, p.ConfigSrc.Present = zero_trust.TunnelCloudflaredNewParamsConfigSrcCloudflare, true
	// Not retried alone: after a lost answer the tunnel exists with this
	// attempt's secret, so EnsureTunnel finds it and asks for its token.
	created, err := c.tunnels.New(ctx, p)
	if err != nil {
		return Tunnel{}, wrapCF("create tunnel", name, err)
	}
	c.log.Info("tunnel created", "tunnel", created.ID, "name", name)
	return Tunnel{ID: created.ID, Name: name, Token: TunnelToken(c.cfg.AccountID, created.ID, raw), Created: true}, nil
}

// FindTunnel returns the ID of the live (not deleted) tunnel named name.
func (c *Cloudflare) FindTunnel(ctx context.Context, name string) (string, bool, error) {
	var p zero_trust.TunnelCloudflaredListParams
	p.AccountID.Value, p.AccountID.Present = c.cfg.AccountID, true
	p.Name.Value, p.Name.Present = name, true
	p.IsDeleted.Value, p.IsDeleted.Present = false, true
	var ids []string
	err := c.retry.do(ctx, c.log, "list tunnels", classifyCF, func(ctx context.Context) error {
		ids = ids[:0]
		page, err := c.tunnels.List(ctx, p)
		for ; err == nil && page != nil && len(page.Result) > 0; page, err = page.GetNextPage() {
			for _, t := range page.Result {
				if t.Name == name && t.DeletedAt.IsZero() {
					ids = append(ids, t.ID)
				}
			}
		}
		return err
	})
	if err != nil {
		return "", false, wrapCF("list tunnels", name, err)
	}
	if len(ids) > 1 {
		return "", false, fmt.Errorf("cloudflare tunnels named %s: %d live ones (%s); delete all but one", name, len(ids), strings.Join(ids, ", "))
	}
	if len(ids) == 0 {
		return "", false, nil
	}
	return ids[0], true, nil
}

// TunnelInfo is a live tunnel as listed.
type TunnelInfo struct {
	ID, Name, Status string
}

// Tunnels lists the live tunnels whose names start with prefix, for the
// orphan sweep.
func (c *Cloudflare) Tunnels(ctx context.Context, prefix string) ([]TunnelInfo, error) {
	var p zero_trust.TunnelCloudflaredListParams
	p.AccountID.Value, p.AccountID.Present = c.cfg.AccountID, true
	p.IsDeleted.Value, p.IsDeleted.Present = false, true
	if prefix != "" {
		p.IncludePrefix.Value, p.IncludePrefix.Present = prefix, true
	}
	var out []TunnelInfo
	err := c.retry.do(ctx, c.log, "list tunnels", classifyCF, func(ctx context.Context) error {
		out = out[:0]
		page, err := c.tunnels.List(ctx, p)
		for ; err == nil && page != nil && len(page.Result) > 0; page, err = page.GetNextPage() {
			for _, t := range page.Result {
				if t.DeletedAt.IsZero() && strings.HasPrefix(t.Name, prefix) {
					out = append(out, TunnelInfo{ID: t.ID, Name: t.Name, Status: string(t.Status)})
				}
			}
		}
		return err
	})
	if err != nil {
		return nil, wrapCF("list tunnels", prefix+"*", err)
	}
	return out, nil
}

func (c *Cloudflare) token(ctx context.Context, id string) (secret.Secret, error) {
	var p zero_trust.TunnelCloudflaredTokenGetParams
	p.AccountID.Value, p.AccountID.Present = c.cfg.AccountID, true
	var tok *string
	err := c.retry.do(ctx, c.log, "tunnel token", classifyCF, func(ctx context.Context) (err error) {
		tok, err = c.tunnels.Token.Get(ctx, id, p)
		return err
	})
	if err != nil {
		return secret.Secret{}, wrapCF("tunnel token", id, err)
	}
	return secret.New(*tok), nil
}

// ConfigureIngress routes hostname to Origin through the tunnel, with a
// 404 catch-all. Putting the same configuration again changes nothing.
func (c *Cloudflare) ConfigureIngress(ctx context.Context, tunnelID, hostname string) error {
	var host, catchAll zero_trust.TunnelCloudflaredConfigurationUpdateParamsConfigIngress
	host.Hostname.Value, host.Hostname.Present = hostname, true
	host.Service.Value, host.Service.Present = Origin, true
	catchAll.Service.Value, catchAll.Service.Present = "http_status:404", true
	var cfg zero_trust.TunnelCloudflaredConfigurationUpdateParamsConfig
	cfg.Ingress.Value, cfg.Ingress.Present = []zero_trust.TunnelCloudflaredConfigurationUpdateParamsConfigIngress{host, catchAll}, true
	var p zero_trust.TunnelCloudflaredConfigurationUpdateParams
	p.AccountID.Value, p.AccountID.Present = c.cfg.AccountID, true
	p.Config.Value, p.Config.Present = cfg, true
	err := c.retry.do(ctx, c.log, "configure tunnel", classifyCF, func(ctx context.Context) error {
		_, err := c.tunnels.Configurations.Update(ctx, tunnelID, p)
		return err
	})
	if err != nil {
		return wrapCF("configure tunnel", tunnelID, err)
	}
	c.log.Info("tunnel ingress set", "tunnel", tunnelID, "hostname", hostname)
	return nil
}

// DeleteTunnel cleans up the tunnel's connections, then deletes it. A
// tunnel already deleted or unknown counts as deleted.
func (c *Cloudflare) DeleteTunnel(ctx context.Context, tunnelID string) error {
	var cp zero_trust.TunnelCloudflaredConnectionDeleteParams
	cp.AccountID.Value, cp.AccountID.Present = c.cfg.AccountID, true
	err := c.retry.do(ctx, c.log, "clean up connections", classifyCF, func(ctx context.Context) error {
		_, err := c.tunnels.Connections.Delete(ctx, tunnelID, cp)
		return err
	})
	if cfHasCode(err, cfTunnelNotFound) || cfStatus(err) == http.StatusNotFound {
		c.log.Info("tunnel already gone", "tunnel", tunnelID)
		return nil
	}
	if err != nil {
		return wrapCF("clean up tunnel connections", tunnelID, err)
	}
	var dp zero_trust.TunnelCloudflaredDeleteParams
	dp.AccountID.Value, dp.AccountID.Present = c.cfg.AccountID, true
	err = c.retry.do(ctx, c.log, "delete tunnel", classifyCF, func(ctx context.Context) error {
		_, err := c.tunnels.Delete(ctx, tunnelID, dp)
		return err
	})
	if cfHasCode(err, cfTunnelNotFound) || cfStatus(err) == http.StatusNotFound {
		err = nil
	}
	if err != nil {
		return wrapCF("delete tunnel", tunnelID, err)
	}
	c.log.Info("tunnel deleted", "tunnel", tunnelID)
	return nil
}

// TunnelStatus is Cloudflare's view of a tunnel.
type TunnelStatus struct {
	// Status is inactive (never connected), healthy, degraded or down.
	Status string
	// Connections counts the edge connections.
	Connections int
	// Deleted is true for a deleted tunnel.
	Deleted bool
	// ConnsActiveAt is when it last gained a connection (zero if never).
	ConnsActiveAt time.Time
}

// Status reads the tunnel's status; an unknown tunnel is ErrNotFound.
func (c *Cloudflare) Status(ctx context.Context, tunnelID string) (TunnelStatus, error) {
	var p zero_trust.TunnelCloudflaredGetParams
	p.AccountID.Value, p.AccountID.Present = c.cfg.AccountID, true
	var t *shared.CloudflareTunnel
	err := c.retry.do(ctx, c.log, "get tunnel", classifyCF, func(ctx context.Context) (err error) {
		t, err = c.tunnels.Get(ctx, tunnelID, p)
		return err
	})
	if cfStatus(err) == http.StatusNotFound {
		return TunnelStatus{}, fmt.Errorf("tunnel %s: %w", tunnelID, ErrNotFound)
	}
	if err != nil {
		return TunnelStatus{}, wrapCF("get tunnel", tunnelID, err)
	}
	st := TunnelStatus{Status: string(t.Status), Deleted: !t.DeletedAt.IsZero(), ConnsActiveAt: t.ConnsActiveAt}
	if st.Deleted {
		return st, nil
	}
	// The tunnel's own connections field is deprecated (always empty):
	// count them through the connections endpoint.
	var conns *pagination.SinglePage[zero_trust.Client]
	err = c.retry.do(ctx, c.log, "get connections", classifyCF, func(ctx context.Context) (err error) {
		conns, err = c.tunnels.Connections.Get(ctx, tunnelID, zero_trust.TunnelCloudflaredConnectionGetParams(p))
		return err
	})
	if err != nil {
		return TunnelStatus{}, wrapCF("get tunnel connections", tunnelID, err)
	}
	for _, client := range conns.Result {
		st.Connections += len(client.Conns)
	}
	return st, nil
}

// classifyCF retries 429 (after its Retry-After), 5xx and transport failures.
func classifyCF(err error) verdict {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return verdict{}
	}
	var ae *zero_trust.Error
	if !errors.As(err, &ae) {
		var ue *url.Error
		return verdict{retry: errors.As(err, &ue)} // the request never got an answer
	}
	switch {
	case ae.StatusCode == http.StatusTooManyRequests:
		v := verdict{retry: true}
		if ae.Response != nil {
			v.after, _ = api.ParseRetryAfter(ae.Response.Header.Get("Retry-After"), time.Now())
		}
		return v
	case ae.StatusCode >= http.StatusInternalServerError:
		return verdict{retry: true}
	}
	return verdict{}
}

func cfStatus(err error) int {
	var ae *zero_trust.Error
	if errors.As(err, &ae) {
		return ae.StatusCode
	}
	return 0
}

func cfHasCode(err error, code int64) bool {
	var ae *zero_trust.Error
	if !errors.As(err, &ae) {
		return false
	}
	for _, e := range ae.Errors {
		if e.Code == code {
			return true
		}
	}
	return false
}

// wrapCF wraps a Cloudflare error with the operation and its object,
// making a refusal ErrDenied with the permission to give the token.
func wrapCF(op, what string, err error) error {
	if cfStatus(err) == http.StatusForbidden || cfHasCode(err, cfAuthError) || cfHasCode(err, cfUnauthorizedScope) {
		perm := "Account: Cloudflare Tunnel: Edit"
		if strings.Contains(op, "record") {
			perm = "Zone: DNS: Edit"
		}
		return fmt.Errorf("cloudflare %s %s: %w: give the API token %q (%w)", op, what, ErrDenied, perm, err)
	}
	return fmt.Errorf("cloudflare %s %s: %w", op, what, err)
}
