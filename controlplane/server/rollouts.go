package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/rollout"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

// RolloutsConfig configures rollouts. The zero value works.
type RolloutsConfig struct {
	// Defaults fill the zero fields of a rollout request's policy.
	Defaults rollout.Policy
	// Tick is how often rollouts advance and tunnels are checked
	// (default 1s).
	Tick time.Duration
}

func (s *Server) initRollouts(ctx context.Context) error {
	m, err := rollout.New(ctx, rollout.Options{
		Store: s.store, Hosts: s.lv.online, ChannelChanged: s.setChannel, Emit: s.addEvents,
		Defaults: s.cfg.Rollouts.Defaults, Logger: s.log.With("component", "rollout"), Now: s.cfg.Now,
	})
	if err != nil {
		return err
	}
	s.rollouts = m
	s.initEvents()
	// Seed the last stored reports: an unchanged heartbeat is never decoded
	// again, so a restarted server would otherwise not see them.
	hosts, err := s.store.ListHosts(ctx, store.HostFilter{})
	if err != nil {
		return err
	}
	for _, h := range hosts {
		var rep api.HeartbeatRequest
		if h.Report != "" && json.Unmarshal([]byte(h.Report), &rep) == nil {
			m.Observe(h.ID, &rep)
			s.watch.Observe(h.ID, s.cfg.Now(), &rep)
		}
	}
	s.initDashboard()
	return nil
}

// replyCache holds the encoded heartbeat replies, one per desired state
// served, until any desired state may have changed.
type replyCache struct {
	mu  sync.Mutex
	gen uint64
	m   map[string][]byte
}

// get returns the reply cached under key at generation gen, or build's.
func (c *replyCache) get(gen uint64, key string, build func() []byte) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen || c.m == nil {
		c.gen, c.m = gen, map[string][]byte{}
	}
	b, ok := c.m[key]
	if !ok {
		b = build()
		c.m[key] = b
	}
	return b
}

// reply returns the encoded heartbeat reply for a host of a channel: what
// the channel's rollout serves it, or the channel's images when the
// channel's revision is none of its rollout's.
func (s *Server) reply(channel, hostID string) []byte {
	s.chMu.RLock()
	c := s.channels[channel]
	s.chMu.RUnlock()
	gen := s.rollouts.Generation()
	key, ds, ok := s.rollouts.Desired(channel, hostID, c.Revision)
	if !ok {
		key, ds = "channel", api.DesiredState{Revision: c.Revision, Images: c.Images}
	}
	ck := channel + "\x00" + key + "\x00" + strconv.FormatInt(c.Revision, 10)
	return s.replies.get(gen, ck, func() []byte {
		b, _ := json.Marshal(api.HeartbeatResponse{IntervalMS: s.cfg.Interval.Milliseconds(), Desired: ds})
		return append(b, '\n')
	})
}

func (s *Server) rolloutRoutes(mux *http.ServeMux, admin func(string, http.HandlerFunc) http.HandlerFunc) {
	mux.HandleFunc("GET "+api.PathAdminRollouts, admin("admin_rollouts", s.handleListRollouts))
	mux.HandleFunc("POST /v1/admin/channels/{name}/rollouts", admin("admin_rollout_start", s.handleStartRollout))
	mux.HandleFunc("GET /v1/admin/channels/{name}/rollout", admin("admin_rollout_get", s.handleGetRollout))
	mux.HandleFunc("POST /v1/admin/channels/{name}/rollout/{action}", admin("admin_rollout_action", s.handleRolloutAction))
}

func (s *Server) handleListRollouts(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, api.RolloutList{Rollouts: s.rollouts.List()})
}

func (s *Server) rolloutError(w http.ResponseWriter, op string, err error) {
	switch {
	case errors.Is(err, rollout.ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error(), "images")
	case errors.Is(err, rollout.ErrNoRollout):
		writeError(w, http.StatusNotFound, err.Error(), "")
	case errors.Is(err, rollout.ErrState):
		writeError(w, http.StatusConflict, err.Error(), "")
	default:
		s.internal(w, op, err)
	}
}

// channelName returns the {name} of the path, or writes a 400.
func channelName(w http.ResponseWriter, r *http.Request) (string, bool) {
	name := r.PathValue("name")
	if !idRE.MatchString(name) {
		writeError(w, http.StatusBadRequest, "channel: 1-128 of [A-Za-z0-9._:-]", "channel")
		return "", false
	}
	return name, true
}

func (s *Server) handleStartRollout(w http.ResponseWriter, r *http.Request) {
	var req api.RolloutRequest
	if !decodeRequest(w, r, &req) {
		return
	}
	name, ok := channelName(w, r)
	if !ok {
		return
	}
	ro, err := s.rollouts.Start(r.Context(), name, req)
	if err != nil {
		s.rolloutError(w, "start rollout", err)
		return
	}
	writeJSON(w, http.StatusCreated, ro)
}

// handleSetChannel replaces a channel's images at once: a rollout of one
// wave, completed as it starts.
func (s *Server) handleSetChannel(w http.ResponseWriter, r *http.Request) {
	var req api.ChannelImages
	if !decodeRequest(w, r, &req) {
		return
	}
	name, ok := channelName(w, r)
	if !ok {
		return
	}
	ro, err := s.rollouts.Set(r.Context(), name, req.Images)
	if err != nil {
		s.rolloutError(w, "set channel images", err)
		return
	}
	writeJSON(w, http.StatusOK, api.DesiredState{Revision: ro.Revision, Images: ro.To})
}

func (s *Server) handleGetRollout(w http.ResponseWriter, r *http.Request) {
	ro, err := s.rollouts.Get(r.PathValue("name"))
	if err != nil {
		s.rolloutError(w, "get rollout", err)
		return
	}
	writeJSON(w, http.StatusOK, ro)
}

func (s *Server) handleRolloutAction(w http.ResponseWriter, r *http.Request) {
	var req api.RolloutAction
	if r.ContentLength != 0 && !decodeRequest(w, r, &req) {
		return
	}
	if len(req.Reason) > 500 {
		writeError(w, http.StatusBadRequest, "reason: at most 500 bytes", "reason")
		return
	}
	name, m := r.PathValue("name"), s.rollouts
	var (
		ro  api.Rollout
		err error
	)
	switch r.PathValue("action") {
	case "pause":
		ro, err = m.Pause(r.Context(), name, req.Reason)
	case "resume":
		ro, err = m.Resume(r.Context(), name)
	case "rollback":
		ro, err = m.Rollback(r.Context(), name, req.Reason)
	default:
		writeError(w, http.StatusNotFound, "unknown rollout action: want pause, resume or rollback", "")
		return
	}
	if err != nil {
		s.rolloutError(w, r.PathValue("action")+" rollout", err)
		return
	}
	writeJSON(w, http.StatusOK, ro)
}
