package server

import (
	"context"
	"net/http"
)

// handleHealthz answers 200 while storage takes writes and 503 with the
// reason while it does not (disk full, read-only database, lost
// connection); it turns back by itself after the next write that succeeds.
func (s *Server) handleHealthz(w http.ResponseWriter, _ *http.Request) {
	body := map[string]any{"status": "ok", "sweeper": s.Leader(), "mass_silence": s.inMass.Load()}
	if err := s.store.WriteHealth(); err != nil {
		body["status"], body["reason"] = "storage_failing", err.Error()
		writeJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	writeJSON(w, http.StatusOK, body)
}

// checkStorage makes one small write when this window wrote nothing, so an
// idle control plane still learns that storage failed, or recovered.
func (s *Server) checkStorage(ctx context.Context) {
	n := s.store.Stats().WriteTx
	if n == s.probedAt.Load() || s.store.WriteHealth() != nil {
		if err := s.store.Probe(ctx, s.cfg.Now()); err != nil && ctx.Err() == nil {
			s.log.Warn("storage probe failed", "err", err)
		}
	}
	s.probedAt.Store(s.store.Stats().WriteTx)
}
