package cftest

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Tunnel statuses, as the API reports them.
const (
	StatusInactive = "inactive"
	StatusDegraded = "degraded"
	StatusHealthy  = "healthy"
	StatusDown     = "down"
)

type connection struct {
	ID       string    `json:"id"`
	ClientID string    `json:"client_id"`
	Colo     string    `json:"colo_name"`
	OpenedAt time.Time `json:"opened_at"`
	OriginIP string    `json:"origin_ip"`
}

type tunnel struct {
	id, name, configSrc string
	secret              []byte
	created             time.Time
	deleted             *time.Time
	conns               []connection
	everConnected       bool
	configVersion       int64
	config              json.RawMessage
}

func (t *tunnel) status() string {
	switch n := len(t.conns); {
	case n >= 4:
		return StatusHealthy
	case n > 0:
		return StatusDegraded
	case t.everConnected:
		return StatusDown
	}
	return StatusInactive
}

func (t *tunnel) wire() map[string]any {
	var deleted any
	if t.deleted != nil {
		deleted = t.deleted.UTC().Format(time.RFC3339Nano)
	}
	return map[string]any{
		"id": t.id, "account_tag": AccountTag, "name": t.name, "created_at": t.created.UTC().Format(time.RFC3339Nano),
		// "connections" is deprecated and empty, as Cloudflare announced:
		// a client counts connections through .../connections.
		"deleted_at": deleted, "connections": []connection{}, "status": t.status(), "tun_type": "cfd_tunnel",
		"config_src": t.configSrc, "remote_config": t.configSrc == "cloudflare", "metadata": map[string]any{},
	}
}

// tokenOf is the tunnel's token as GET .../token answers it: standard
// base64 of cloudflared's TunnelToken JSON {"a","s","t"}.
func tokenOf(t *tunnel) string {
	b, _ := json.Marshal(struct {
		A string `json:"a"`
		S []byte `json:"s"`
		T string `json:"t"`
	}{AccountTag, t.secret, t.id})
	return base64.StdEncoding.EncodeToString(b)
}

func (s *Server) tunnelLocked(r *http.Request, allowDeleted bool) (*tunnel, *failure) {
	id := r.PathValue("id")
	if _, err := uuid.Parse(id); err != nil {
		return nil, badRequest(1001, "tunnel_id must be a UUID")
	}
	t, ok := s.tunnels[id]
	if !ok || (!allowDeleted && t.deleted != nil) {
		return nil, notFound(1003, "Tunnel not found")
	}
	return t, nil
}

func (s *Server) createTunnel(r *http.Request, body []byte) (any, *pageInfo, *failure) {
	var in struct {
		Name      string  `json:"name"`
		Secret    *string `json:"tunnel_secret"`
		ConfigSrc string  `json:"config_src"`
	}
	if f := decode(body, &in); f != nil {
		return nil, nil, f
	}
	if in.Name == "" {
		return nil, nil, badRequest(1001, "name is required")
	}
	switch in.ConfigSrc {
	case "":
		in.ConfigSrc = "local"
	case "local", "cloudflare":
	default:
		return nil, nil, badRequest(1001, "config_src must be local or cloudflare")
	}
	var secret []byte
	if in.Secret != nil {
		var err error
		if secret, err = base64.StdEncoding.DecodeString(*in.Secret); err != nil || len(secret) < 32 {
			return nil, nil, badRequest(1001, "tunnel_secret must be at least 32 bytes, encoded as base64")
		}
	} else {
		secret = make([]byte, 32)
		_, _ = rand.Read(secret)
	}
	for _, t := range s.tunnels {
		if t.name == in.Name && t.deleted == nil {
			return nil, nil, fail(http.StatusConflict, 1013, "You already have a tunnel with this name")
		}
	}
	t := &tunnel{id: uuid.NewString(), name: in.Name, configSrc: in.ConfigSrc, secret: secret, created: s.now()}
	s.tunnels[t.id] = t
	out := t.wire()
	out["token"] = tokenOf(t)
	return out, nil, nil
}

func (s *Server) listTunnels(r *http.Request, _ []byte) (any, *pageInfo, *failure) {
	q := r.URL.Query()
	var match []*tunnel
	for _, t := range s.tunnels {
		switch {
		case q.Has("name") && t.name != q.Get("name"),
			q.Has("uuid") && t.id != q.Get("uuid"),
			q.Get("is_deleted") == "true" && t.deleted == nil,
			q.Get("is_deleted") == "false" && t.deleted != nil,
			q.Has("include_prefix") && !strings.HasPrefix(t.name, q.Get("include_prefix")),
			q.Has("exclude_prefix") && strings.HasPrefix(t.name, q.Get("exclude_prefix")),
			q.Has("status") && t.status() != q.Get("status"):
			continue
		}
		match = append(match, t)
	}
	sort.Slice(match, func(i, j int) bool {
		return match[i].created.Before(match[j].created) || (match[i].created.Equal(match[j].created) && match[i].id < match[j].id)
	})
	cut, info, f := page(r, match, 20, 1000)
	if f != nil {
		return nil, nil, f
	}
	out := make([]map[string]any, 0, len(cut))
	for _, t := range cut {
		out = append(out, t.wire())
	}
	return out, info, nil
}

func (s *Server) getTunnel(r *http.Request, _ []byte) (any, *pageInfo, *failure) {
	t, f := s.tunnelLocked(r, true)
	if f != nil {
		return nil, nil, f
	}
	return t.wire(), nil, nil
}

func (s *Server) deleteTunnel(r *http.Request, _ []byte) (any, *pageInfo, *failure) {
	t, f := s.tunnelLocked(r, false)
	if f != nil {
		return nil, nil, f
	}
	if len(t.conns) > 0 {
		return nil, nil, badRequest(1022, "Cannot delete tunnel because it has active connections. Clean up the connections first.")
	}
	now := s.now()
	t.deleted = &now
	return t.wire(), nil, nil
}

func (s *Server) getConfig(r *http.Request, _ []byte) (any, *pageInfo, *failure) {
	t, f := s.tunnelLocked(r, false)
	if f != nil {
		return nil, nil, f
	}
	return s.configWire(t), nil, nil
}

func (s *Server) configWire(t *tunnel) map[string]any {
	var cfg any
	if t.config != nil {
		cfg = t.config
	}
	return map[string]any{"account_id": AccountID, "tunnel_id": t.id, "version": t.configVersion, "config": cfg,
		"source": "cloudflare", "created_at": s.now().UTC().Format(time.RFC3339Nano)}
}

// IngressRule is one rule of a tunnel's ingress, as stored.
type IngressRule struct {
	Hostname string `json:"hostname,omitempty"`
	Path     string `json:"path,omitempty"`
	Service  string `json:"service"`
}

func (s *Server) putConfig(r *http.Request, body []byte) (any, *pageInfo, *failure) {
	t, f := s.tunnelLocked(r, false)
	if f != nil {
		return nil, nil, f
	}
	var in struct {
		Config *struct {
			Ingress []IngressRule `json:"ingress"`
		} `json:"config"`
	}
	if f := decode(body, &in); f != nil {
		return nil, nil, f
	}
	var raw struct {
		Config json.RawMessage `json:"config"`
	}
	_ = json.Unmarshal(body, &raw)
	if in.Config == nil {
		return nil, nil, badRequest(1001, "config is required")
	}
	rules := in.Config.Ingress
	if len(rules) == 0 {
		return nil, nil, badRequest(1056, "Ingress rules are required: the last rule must match all URLs")
	}
	for i, rule := range rules {
		if err := checkService(rule.Service); err != nil {
			return nil, nil, badRequest(1056, fmt.Sprintf("ingress rule %d: %v", i+1, err))
		}
	}
	if last := rules[len(rules)-1]; last.Hostname != "" || last.Path != "" {
		return nil, nil, badRequest(1056, "The last ingress rule must match all URLs (i.e. it should not have a hostname or path filter)")
	}
	t.config, t.configSrc = raw.Config, "cloudflare"
	t.configVersion++
	return s.configWire(t), nil, nil
}

func checkService(svc string) error {
	if code, ok := strings.CutPrefix(svc, "http_status:"); ok {
		if len(code) != 3 || code[0] < '1' || code[0] > '5' {
			return fmt.Errorf("%q is not an HTTP status", svc)
		}
		return nil
	}
	if svc == "hello_world" || strings.HasPrefix(svc, "unix:") {
		return nil
	}
	scheme, rest, ok := strings.Cut(svc, "://")
	switch {
	case !ok || rest == "":
		return fmt.Errorf("service %q is not a URL, http_status:NNN or hello_world", svc)
	case scheme != "http" && scheme != "https" && scheme != "tcp" && scheme != "ssh" && scheme != "rdp":
		return fmt.Errorf("service %q has an unsupported scheme", svc)
	}
	return nil
}

func (s *Server) getConnections(r *http.Request, _ []byte) (any, *pageInfo, *failure) {
	t, f := s.tunnelLocked(r, false)
	if f != nil {
		return nil, nil, f
	}
	byClient := map[string][]connection{}
	var order []string
	for _, c := range t.conns {
		if _, ok := byClient[c.ClientID]; !ok {
			order = append(order, c.ClientID)
		}
		byClient[c.ClientID] = append(byClient[c.ClientID], c)
	}
	out := []map[string]any{}
	for _, id := range order {
		out = append(out, map[string]any{"id": id, "arch": "linux_amd64", "version": "2026.7.1", "conns": byClient[id],
			"run_at": byClient[id][0].OpenedAt.UTC().Format(time.RFC3339Nano), "features": []string{}})
	}
	return out, nil, nil
}

func (s *Server) deleteConnections(r *http.Request, _ []byte) (any, *pageInfo, *failure) {
	t, f := s.tunnelLocked(r, false)
	if f != nil {
		return nil, nil, f
	}
	client := r.URL.Query().Get("client_id")
	kept := t.conns[:0]
	for _, c := range t.conns {
		if client != "" && c.ClientID != client {
			kept = append(kept, c)
		}
	}
	t.conns = kept
	return nil, nil, nil
}

func (s *Server) getToken(r *http.Request, _ []byte) (any, *pageInfo, *failure) {
	t, f := s.tunnelLocked(r, false)
	if f != nil {
		return nil, nil, f
	}
	return tokenOf(t), nil, nil
}

// Tunnel is a tunnel as the server holds it, for assertions.
type Tunnel struct {
	ID      string
	Name    string
	Deleted bool
	Status  string
	// Secret is the tunnel secret the tunnel was created with.
	Secret []byte
	// Ingress is the ingress of the last configuration put, nil before any.
	Ingress []IngressRule
	// ConfigVersion counts the configurations put.
	ConfigVersion int64
}

// Tunnels returns every tunnel, deleted ones included, oldest first.
func (s *Server) Tunnels() []Tunnel {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Tunnel
	for _, t := range s.tunnels {
		x := Tunnel{ID: t.id, Name: t.name, Deleted: t.deleted != nil, Status: t.status(), Secret: append([]byte(nil), t.secret...), ConfigVersion: t.configVersion}
		if t.config != nil {
			var c struct {
				Ingress []IngressRule `json:"ingress"`
			}
			_ = json.Unmarshal(t.config, &c)
			x.Ingress = c.Ingress
		}
		out = append(out, x)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// LiveTunnels returns the tunnels not deleted.
func (s *Server) LiveTunnels() []Tunnel {
	var out []Tunnel
	for _, t := range s.Tunnels() {
		if !t.Deleted {
			out = append(out, t)
		}
	}
	return out
}

// Connect makes a connector (a cloudflared) hold n connections to the
// tunnel, as a running host would; it returns the connector's client ID,
// or "" for an unknown tunnel.
func (s *Server) Connect(tunnelID string, n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tunnels[tunnelID]
	if !ok || t.deleted != nil {
		return ""
	}
	client := uuid.NewString()
	colos := []string{"iad01", "iad08", "ewr01", "ewr05"}
	for i := range n {
		t.conns = append(t.conns, connection{ID: uuid.NewString(), ClientID: client, Colo: colos[i%len(colos)], OpenedAt: s.now(), OriginIP: "10.0.0.10"})
	}
	t.everConnected = t.everConnected || n > 0
	return client
}

// Disconnect drops every connection of the tunnel, as a dead host would.
func (s *Server) Disconnect(tunnelID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.tunnels[tunnelID]; ok {
		t.conns = nil
	}
}
