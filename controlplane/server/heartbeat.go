package server

import (
	"crypto/sha256"
	"net/http"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/attest"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

// handleHeartbeat touches only memory: the store sees the host at the next
// flush, and only what changed.
func (s *Server) handleHeartbeat(w http.ResponseWriter, r *http.Request) {
	now := s.cfg.Now()
	if ok, wait := s.shed.allow(now); !ok {
		s.lm.shed.Inc()
		writeRetryAfter(w, wait, "control plane over its request budget")
		return
	}
	h := s.hosts.get(r.PathValue("id"))
	if h == nil {
		h = s.loadShared(r.Context(), r.PathValue("id")) // registered at another replica
	}
	if h == nil {
		writeError(w, http.StatusUnauthorized, "unknown host: register again", "")
		return
	}
	h.mu.Lock()
	okToken := attest.TokenMatches(h.tokenHash, bearer(r))
	h.mu.Unlock()
	if !okToken && s.reloadShared(r.Context(), h, now) { // registered again at another replica
		h.mu.Lock()
		okToken = attest.TokenMatches(h.tokenHash, bearer(r))
		h.mu.Unlock()
	}
	h.mu.Lock()
	status := h.status
	allowed, wait := true, time.Duration(0)
	if okToken && status != store.StatusRemoved {
		allowed, wait = h.allow(now, s.cfg.HostRate, s.cfg.HostBurst)
	}
	h.mu.Unlock()
	switch {
	case !okToken:
		writeError(w, http.StatusUnauthorized, "host token invalid or rotated: register again", "")
		return
	case status == store.StatusRemoved:
		writeError(w, http.StatusGone, "host deprovisioned: stop units and stay idle", "")
		return
	case !allowed:
		s.m.rateLimited.Inc()
		writeRetryAfter(w, wait, "too many requests for this host")
		return
	}
	b, rerr := readBody(w, r)
	if rerr != nil {
		writeError(w, rerr.code, rerr.msg, rerr.field)
		return
	}
	sum := sha256.Sum256(b)
	h.mu.Lock()
	same := sum == h.reportHash
	h.mu.Unlock()
	// A body identical to the last accepted one was validated then: skip
	// decoding it again (the common case: nothing changed on the host).
	var req api.HeartbeatRequest
	if !same {
		if f := api.InvalidUTF8Field(b); f != "" {
			writeError(w, http.StatusBadRequest, f+": not valid UTF-8", f)
			return
		}
		rerr = decodeStrict(b, &req)
		if rerr == nil {
			if e := api.ValidateHeartbeat(req); e != nil {
				rerr = &reqError{http.StatusBadRequest, e.Error(), e.Field}
			}
		}
		if rerr != nil {
			writeError(w, rerr.code, rerr.msg, rerr.field)
			return
		}
	}
	h.mu.Lock()
	if h.status == store.StatusRemoved { // deprovisioned while we decoded
		h.mu.Unlock()
		writeError(w, http.StatusGone, "host deprovisioned: stop units and stay idle", "")
		return
	}
	if now.After(h.lastSeen) {
		h.lastSeen = now
	}
	var ev *store.Event
	if h.status != store.StatusOnline {
		h.status = store.StatusOnline
		if s.shared == nil { // shared storage records the return at the flush
			h.dirtyStatus = true
			ev = &store.Event{HostID: h.id, Type: "online", Detail: "heartbeat after silence", At: now}
		}
	}
	if !same && sum != h.reportHash {
		h.reportHash, h.report, h.version = sum, b, req.AgentVersion
		h.tunnelID = ""
		if req.Tunnel != nil {
			h.tunnelID = req.Tunnel.ID
		}
	}
	channel := h.channel
	h.mu.Unlock()
	if !same {
		s.observe(h.id, now, &req)
	}
	if ev != nil {
		s.log.Info("host online", "host", ev.HostID)
		s.addEvents(*ev)
	}
	s.m.heartbeats.Inc()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(s.heartbeatReply(channel, h.id))
}
