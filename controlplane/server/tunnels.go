package server

import (
	"errors"
	"net/http"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

// handleBindTunnel records the tunnel the provisioner created for an org:
// from then on it is the org's, whatever its hosts report.
func (s *Server) handleBindTunnel(w http.ResponseWriter, r *http.Request) {
	var t api.OrgTunnel
	if !decodeRequest(w, r, &t) {
		return
	}
	org := r.PathValue("org")
	switch {
	case t.Org != "" && t.Org != org:
		writeError(w, http.StatusBadRequest, "org: differs from the path", "org")
		return
	case !idRE.MatchString(org):
		writeError(w, http.StatusBadRequest, "org: 1-128 of [A-Za-z0-9._:-]", "org")
		return
	case !idRE.MatchString(t.TunnelID) || len(t.TunnelID) > api.MaxTunnelIDBytes:
		writeError(w, http.StatusBadRequest, "tunnel_id: required, 1-64 of [A-Za-z0-9._:-]", "tunnel_id")
		return
	}
	err := s.store.BindTunnel(r.Context(), org, t.TunnelID, s.cfg.Now())
	if errors.Is(err, store.ErrConflict) {
		writeError(w, http.StatusConflict, err.Error(), "tunnel_id")
		return
	}
	if err != nil {
		s.internal(w, "bind org tunnel", err)
		return
	}
	t.Org = org
	s.log.Info("org tunnel bound", "org", org, "tunnel", t.TunnelID)
	writeJSON(w, http.StatusOK, t)
}
