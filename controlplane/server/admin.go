package server

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/attest"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

func decodeRequest(w http.ResponseWriter, r *http.Request, v any) bool {
	b, rerr := readBody(w, r)
	if rerr == nil {
		rerr = decodeStrict(b, v)
	}
	if rerr != nil {
		writeError(w, rerr.code, rerr.msg, rerr.field)
		return false
	}
	return true
}

func validOrgRole(org, role string) *reqError {
	if !idRE.MatchString(org) {
		return &reqError{http.StatusBadRequest, "org: required, 1-128 of [A-Za-z0-9._:-]", "org"}
	}
	if role != api.RoleTenant && role != api.RoleWorkspace {
		return &reqError{http.StatusBadRequest, `role: want "tenant" or "workspace"`, "role"}
	}
	return nil
}

func (s *Server) internal(w http.ResponseWriter, op string, err error) {
	s.log.Error(op+" failed", "err", err)
	writeError(w, http.StatusInternalServerError, op+" failed; retry", "")
}

func (s *Server) handleDeclare(w http.ResponseWriter, r *http.Request) {
	var d api.Declaration
	if !decodeRequest(w, r, &d) {
		return
	}
	id := r.PathValue("instance_id")
	if d.InstanceID != "" && d.InstanceID != id {
		writeError(w, http.StatusBadRequest, "instance_id: differs from the path", "instance_id")
		return
	}
	if !idRE.MatchString(id) {
		writeError(w, http.StatusBadRequest, "instance_id: 1-128 of [A-Za-z0-9._:-]", "instance_id")
		return
	}
	if e := validOrgRole(d.Org, d.Role); e != nil {
		writeError(w, e.code, e.msg, e.field)
		return
	}
	d.InstanceID = id
	if err := s.store.PutDeclaration(r.Context(), store.Declaration{
		InstanceID: id, Org: d.Org, Role: d.Role, Workspace: d.Workspace, Channel: d.Channel, CreatedAt: s.cfg.Now(),
	}); err != nil {
		s.internal(w, "declare instance", err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (s *Server) handleCreateToken(w http.ResponseWriter, r *http.Request) {
	var req api.EnrollmentTokenRequest
	if !decodeRequest(w, r, &req) {
		return
	}
	if e := validOrgRole(req.Org, req.Role); e != nil {
		writeError(w, e.code, e.msg, e.field)
		return
	}
	ttl := 24 * time.Hour
	if req.TTLSeconds != 0 {
		if req.TTLSeconds < 60 || req.TTLSeconds > 30*24*3600 {
			writeError(w, http.StatusBadRequest, "ttl_seconds: between 60 and 2592000", "ttl_seconds")
			return
		}
		ttl = time.Duration(req.TTLSeconds) * time.Second
	}
	if req.Uses == 0 {
		req.Uses = 1
	}
	if e := api.ValidateEnrollmentToken(req); e != nil {
		writeError(w, http.StatusBadRequest, e.Error(), e.Field)
		return
	}
	now := s.cfg.Now()
	tok, hash := attest.NewToken(attest.EnrollmentTokenPrefix)
	et := store.EnrollmentToken{ID: uuid.NewString(), Hash: hash, Org: req.Org, Role: req.Role, Workspace: req.Workspace,
		Channel: req.Channel, ExpiresAt: now.Add(ttl), CreatedAt: now, MaxUses: req.Uses, MachineID: req.MachineID}
	if err := s.store.CreateEnrollmentToken(r.Context(), et); err != nil {
		s.internal(w, "create enrollment token", err)
		return
	}
	s.log.Info("enrollment token created", "id", et.ID, "org", et.Org, "role", et.Role, "expires", et.ExpiresAt)
	writeJSON(w, http.StatusCreated, api.EnrollmentTokenResponse{ID: et.ID, Token: tok, ExpiresAt: et.ExpiresAt, Uses: et.MaxUses, MachineID: et.MachineID})
}

// apiHost converts a stored host, overlaid with its live state.
func (s *Server) apiHost(h store.Host) api.Host {
	out := api.Host{
		ID: h.ID, InstanceKey: h.InstanceKey, Org: h.Org, Role: h.Role, Workspace: h.Workspace, Channel: h.Channel,
		Status: h.Status, BootID: h.BootID, AgentVersion: h.AgentVersion, Hostname: h.Hostname, TunnelID: h.TunnelID,
		RegisteredAt: h.RegisteredAt, LastSeen: h.LastSeen,
	}
	report := []byte(h.Report)
	if st := s.hosts.get(h.ID); st != nil {
		st.mu.Lock()
		out.Status = s.lv.status(st.status, out.Status)
		if st.lastSeen.After(out.LastSeen) {
			out.LastSeen = st.lastSeen.UTC()
		}
		if st.report != nil { // the tunnel stays the stored one: see store.Tunnels
			report, out.AgentVersion = st.report, st.version
		}
		st.mu.Unlock()
	}
	if len(report) > 0 {
		var rep api.HeartbeatRequest
		if json.Unmarshal(report, &rep) == nil {
			out.Report = &rep
		}
	}
	return out
}

func (s *Server) handleListHosts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var f store.HostFilter
	fields := map[string]*string{"org": &f.Org, "role": &f.Role, "workspace": &f.Workspace, "channel": &f.Channel, "status": &f.Status}
	for k, v := range q {
		p, ok := fields[k]
		if !ok {
			writeError(w, http.StatusBadRequest, "unknown query parameter "+strconv.Quote(k)+": filter by org, role, workspace, channel or status", k)
			return
		}
		*p = v[0]
	}
	status := f.Status
	f.Status = "" // the live status is in memory
	hosts, err := s.store.ListHosts(r.Context(), f)
	if err != nil {
		s.internal(w, "list hosts", err)
		return
	}
	out := api.HostList{Hosts: []api.Host{}}
	for _, h := range hosts {
		ah := s.apiHost(h)
		if status == "" || ah.Status == status {
			out.Hosts = append(out.Hosts, ah)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleGetHost(w http.ResponseWriter, r *http.Request) {
	h, err := s.store.GetHost(r.Context(), r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "no such host", "")
		return
	}
	if err != nil {
		s.internal(w, "get host", err)
		return
	}
	writeJSON(w, http.StatusOK, s.apiHost(h))
}

func (s *Server) handleDeprovision(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	live := ""
	if st := s.hosts.get(id); st != nil {
		st.mu.Lock()
		live = st.tunnelID
		st.mu.Unlock()
	}
	h, err := s.store.Deprovision(r.Context(), id, live, s.cfg.Now())
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "no such host", "")
		return
	}
	if err != nil {
		s.internal(w, "deprovision host", err)
		return
	}
	tunnel := h.TunnelID
	if st := s.hosts.get(id); st != nil {
		st.mu.Lock()
		st.status, st.dirtyStatus = store.StatusRemoved, false
		st.mu.Unlock()
	}
	s.log.Info("host deprovisioned", "host", id, "tunnel", tunnel)
	writeJSON(w, http.StatusOK, api.DeprovisionResponse{HostID: id, TunnelID: tunnel, Status: store.StatusRemoved})
}

func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	limit := 1000
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			writeError(w, http.StatusBadRequest, "limit: want 1-10000", "limit")
			return
		}
		limit = n
	}
	evs, err := s.store.Events(r.Context(), r.URL.Query().Get("host"), limit)
	if err != nil {
		s.internal(w, "list events", err)
		return
	}
	// Transitions not flushed yet (ID 0) come last, so that an event is
	// listed as soon as the status it explains.
	evs = append(evs, s.pendingEvents(r.URL.Query().Get("host"))...)
	evs = evs[max(0, len(evs)-limit):]
	out := api.EventList{Events: []api.Event{}}
	for _, e := range evs {
		out.Events = append(out.Events, apiEvent(e))
	}
	writeJSON(w, http.StatusOK, out)
}

// apiEvent converts a stored event; a coalesced one carries its count.
func apiEvent(e store.Event) api.Event {
	out := api.Event{ID: e.ID, HostID: e.HostID, Type: e.Type, Detail: e.Detail, At: e.At}
	if e.Count > 1 {
		out.Count, out.LastAt = e.Count, e.LastAt
	}
	return out
}
