package server

import (
	"crypto/sha256"
	"net/http"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

var errGone = &reqError{http.StatusGone, "host deprovisioned: stop units and stay idle", ""}

// handleHeartbeat touches only memory: the store sees the host at the next
// flush, and only what changed.
func (s *Server) handleHeartbeat(w http.ResponseWriter, r *http.Request) {
	now := s.cfg.Now()
	rerr := s.admit(now)
	var h *hostState
	if rerr == nil {
		h, rerr = s.heartbeatHost(r, now)
	}
	var rep heartbeatBody
	if rerr == nil {
		rep, rerr = s.readReport(w, r, h)
	}
	var channel string
	if rerr == nil {
		channel, rerr = s.accept(h, rep, now)
	}
	if rerr != nil {
		rerr.write(w)
		return
	}
	s.m.heartbeats.Inc()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(s.reply(channel, h.id))
}

// admit takes one agent request from the global budget.
func (s *Server) admit(now time.Time) refusal {
	if ok, wait := s.shed.allow(now); !ok {
		s.lm.shed.Inc()
		return tooMany{wait, "control plane over its request budget"}
	}
	return nil
}

// heartbeatHost authenticates the host of a heartbeat and takes one request
// from its own budget.
func (s *Server) heartbeatHost(r *http.Request, now time.Time) (*hostState, refusal) {
	h, ok := s.lv.authenticate(r.Context(), r.PathValue("id"), bearer(r), now)
	switch {
	case h == nil:
		return nil, &reqError{http.StatusUnauthorized, "unknown host: register again", ""}
	case !ok:
		return nil, &reqError{http.StatusUnauthorized, "host token invalid or rotated: register again", ""}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.status == store.StatusRemoved {
		return nil, errGone
	}
	if allowed, wait := h.allow(now, s.cfg.HostRate, s.cfg.HostBurst); !allowed {
		s.m.rateLimited.Inc()
		return nil, tooMany{wait, "too many requests for this host"}
	}
	return h, nil
}

// heartbeatBody is a heartbeat body; req is nil when it is the body last accepted
// from the host (validated then, not decoded again: the common case,
// nothing changed on the host).
type heartbeatBody struct {
	body []byte
	sum  [32]byte
	req  *api.HeartbeatRequest
}

func (s *Server) readReport(w http.ResponseWriter, r *http.Request, h *hostState) (heartbeatBody, refusal) {
	b, rerr := readBody(w, r)
	if rerr != nil {
		return heartbeatBody{}, rerr
	}
	rep := heartbeatBody{body: b, sum: sha256.Sum256(b)}
	h.mu.Lock()
	same := rep.sum == h.reportHash
	h.mu.Unlock()
	if same {
		return rep, nil
	}
	if f := api.InvalidUTF8Field(b); f != "" {
		return rep, &reqError{http.StatusBadRequest, f + ": not valid UTF-8", f}
	}
	var req api.HeartbeatRequest
	if rerr := decodeStrict(b, &req); rerr != nil {
		return rep, rerr
	}
	if e := api.ValidateHeartbeat(req); e != nil {
		return rep, &reqError{http.StatusBadRequest, e.Error(), e.Field}
	}
	rep.req = &req
	return rep, nil
}

// accept records a heartbeat in the host's live state and returns the
// host's channel.
func (s *Server) accept(h *hostState, rep heartbeatBody, now time.Time) (string, refusal) {
	h.mu.Lock()
	if h.status == store.StatusRemoved { // deprovisioned while we decoded
		h.mu.Unlock()
		return "", errGone
	}
	if now.After(h.lastSeen) {
		h.lastSeen = now
	}
	var ev *store.Event
	if h.status != store.StatusOnline {
		ev = s.lv.returned(h, now)
	}
	if rep.req != nil && rep.sum != h.reportHash {
		h.reportHash, h.report, h.version = rep.sum, rep.body, rep.req.AgentVersion
		h.tunnelID = ""
		if rep.req.Tunnel != nil {
			h.tunnelID = rep.req.Tunnel.ID
		}
	}
	channel := h.channel
	h.mu.Unlock()
	if rep.req != nil {
		s.observe(h.id, now, rep.req)
	}
	if ev != nil {
		s.log.Info("host online", "host", ev.HostID)
		s.addEvents(*ev)
	}
	return channel, nil
}
