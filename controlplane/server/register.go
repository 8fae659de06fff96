package server

import (
	"errors"
	"net/http"
	"regexp"
	"time"

	"github.com/google/uuid"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/attest"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

var idRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// identity is who a proof says the host is and what it may be.
type identity struct {
	key                           string
	org, role, workspace, channel string
	// tokenID is the enrollment token's; attested: a fresh IMDS document.
	tokenID  string
	attested bool
}

func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) {
	if rerr := s.admit(s.cfg.Now()); rerr != nil {
		rerr.write(w)
		return
	}
	b, rerr := readBody(w, r)
	if f := api.InvalidUTF8Field(b); rerr == nil && f != "" {
		rerr = &reqError{http.StatusBadRequest, f + ": not valid UTF-8", f}
	}
	if rerr == nil {
		var req api.RegisterRequest
		if rerr = decodeStrict(b, &req); rerr == nil {
			rerr = s.register(w, r, req)
		}
	}
	if rerr != nil {
		writeError(w, rerr.code, rerr.msg, rerr.field)
	}
}

func validateRegister(req api.RegisterRequest) *reqError {
	bad := func(field, msg string) *reqError { return &reqError{http.StatusBadRequest, field + ": " + msg, field} }
	if e := api.ValidateRegisterStrings(req); e != nil {
		return bad(e.Field, e.Msg)
	}
	switch {
	case (req.IdentityPKCS7 == "") == (req.EnrollmentToken == ""):
		return bad("identity_pkcs7", "give exactly one proof: identity_pkcs7 (on EC2) or enrollment_token")
	case req.EnrollmentToken != "" && !idRE.MatchString(req.MachineID):
		return bad("machine_id", "required with enrollment_token: 1-128 of [A-Za-z0-9._:-]")
	case !idRE.MatchString(req.BootID):
		return bad("boot_id", "required: 1-128 of [A-Za-z0-9._:-]")
	case req.Role != "" && req.Role != api.RoleTenant && req.Role != api.RoleWorkspace:
		return bad("role", `want "tenant" or "workspace"`)
	case len(req.AgentVersion) > 64:
		return bad("agent_version", "longer than 64 bytes")
	case len(req.Hostname) > 255:
		return bad("hostname", "longer than 255 bytes")
	case len(req.Org) > 128 || len(req.Workspace) > 128:
		return bad("org", "org and workspace are at most 128 bytes")
	}
	return nil
}

// register authenticates req and registers the host. It writes nothing
// unless every check passes.
func (s *Server) register(w http.ResponseWriter, r *http.Request, req api.RegisterRequest) *reqError {
	if e := validateRegister(req); e != nil {
		return e
	}
	now := s.cfg.Now()
	var (
		id  identity
		err *reqError
	)
	if req.IdentityPKCS7 != "" {
		id, err = s.attestIMDS(r, req, now)
	} else {
		id, err = s.attestEnrollment(r, req, now)
	}
	if err != nil {
		return err
	}
	for _, c := range []struct{ field, claim, want string }{
		{"role", req.Role, id.role}, {"org", req.Org, id.org}, {"workspace", req.Workspace, id.workspace},
	} {
		if c.claim != "" && c.want != "" && c.claim != c.want {
			return &reqError{http.StatusForbidden, c.field + ": claim " + c.claim + " does not match the declared " + c.want, c.field}
		}
	}
	if id.workspace == "" {
		id.workspace = req.Workspace
	}
	if id.role == "" {
		id.role = req.Role
	}
	// Registrations of one instance are serialised so the live table ends
	// with the token the store kept.
	mu := &s.regMu[fnv32(id.key)%uint32(len(s.regMu))]
	mu.Lock()
	defer mu.Unlock()
	tok, hash := attest.NewToken(attest.HostTokenPrefix)
	presented := ""
	if req.HostToken != "" {
		presented = store.HashToken(req.HostToken)
	}
	h, created, serr := s.store.Register(r.Context(), store.Registration{
		InstanceKey: id.key, NewHostID: uuid.NewString(), Org: id.org, Role: id.role, Workspace: id.workspace,
		Channel: id.channel, BootID: req.BootID, AgentVersion: req.AgentVersion, Hostname: req.Hostname,
		NewTokenHash: hash, PresentedTokenHash: presented, EnrollmentTokenID: id.tokenID, Attested: id.attested, Now: now,
	})
	switch {
	case errors.Is(serr, store.ErrConflict):
		return &reqError{http.StatusConflict, "instance already registered by another boot: present its current host_token, or deprovision the host", "host_token"}
	case errors.Is(serr, store.ErrForeign):
		return &reqError{http.StatusForbidden, "instance is registered to another org, role or workspace: deprovision that host first", "org"}
	case errors.Is(serr, store.ErrTokenUsed):
		return &reqError{http.StatusForbidden, "enrollment token already used: create a new one with POST " + api.PathAdminTokens, "enrollment_token"}
	case errors.Is(serr, store.ErrRemoved):
		return &reqError{http.StatusGone, "host deprovisioned", ""}
	case serr != nil:
		s.log.Error("register failed", "instance", id.key, "err", serr)
		return &reqError{http.StatusInternalServerError, "registration could not be stored; retry", ""}
	}
	st := s.hosts.byInstance(id.key)
	if st == nil {
		st = newHostState(h)
		s.hosts.put(st)
	}
	st.mu.Lock()
	st.tokenHash, st.status, st.dirtyStatus, st.lastSeen, st.channel = h.TokenHash, store.StatusOnline, false, now, h.Channel
	st.version = h.AgentVersion
	st.mu.Unlock()
	s.log.Info("host registered", "host", h.ID, "instance", id.key, "org", h.Org, "role", h.Role, "boot", req.BootID, "new", created)
	code := http.StatusOK
	if created {
		code = http.StatusCreated
	}
	writeJSON(w, code, api.RegisterResponse{
		HostID: h.ID, HostToken: tok, IntervalMS: s.cfg.Interval.Milliseconds(),
		Org: h.Org, Role: h.Role, Workspace: h.Workspace, Channel: h.Channel,
	})
	return nil
}

func fnv32(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint32(s[i])) * 16777619
	}
	return h
}

func (s *Server) attestIMDS(r *http.Request, req api.RegisterRequest, now time.Time) (identity, *reqError) {
	if s.cfg.Verifier == nil {
		return identity{}, &reqError{http.StatusForbidden, "IMDS attestation is not configured on this control plane (start it with --aws-cert)", "identity_pkcs7"}
	}
	doc, err := s.cfg.Verifier.Verify(req.IdentityPKCS7, req.IdentityDocument, now)
	fresh := err == nil
	switch {
	case errors.Is(err, attest.ErrStale):
		// Only a host that presents its current token may use an old document.
		cur := s.hosts.byInstance("ec2:" + doc.InstanceID)
		ok := false
		if cur != nil {
			cur.mu.Lock()
			ok = attest.TokenMatches(cur.tokenHash, req.HostToken)
			cur.mu.Unlock()
		}
		if !ok {
			return identity{}, &reqError{http.StatusUnauthorized, err.Error(), "identity_pkcs7"}
		}
	case errors.Is(err, attest.ErrBadSignature):
		return identity{}, &reqError{http.StatusUnauthorized, "identity document signature does not verify against the configured AWS certificates", "identity_pkcs7"}
	case err != nil:
		return identity{}, &reqError{http.StatusBadRequest, err.Error(), "identity_pkcs7"}
	}
	d, err := s.store.GetDeclaration(r.Context(), doc.InstanceID)
	if errors.Is(err, store.ErrNotFound) {
		return identity{}, &reqError{http.StatusForbidden, "instance " + doc.InstanceID + " was not declared: declare it with PUT /v1/admin/instances/" + doc.InstanceID, ""}
	}
	if err != nil {
		s.log.Error("get declaration failed", "instance", doc.InstanceID, "err", err)
		return identity{}, &reqError{http.StatusInternalServerError, "declaration lookup failed; retry", ""}
	}
	return identity{key: "ec2:" + doc.InstanceID, org: d.Org, role: d.Role, workspace: d.Workspace, channel: d.Channel, attested: fresh}, nil
}

func (s *Server) attestEnrollment(r *http.Request, req api.RegisterRequest, now time.Time) (identity, *reqError) {
	denied := &reqError{http.StatusUnauthorized, "enrollment token unknown or expired: create one with POST /v1/admin/enrollment-tokens", "enrollment_token"}
	t, err := s.store.EnrollmentTokenByHash(r.Context(), store.HashToken(req.EnrollmentToken))
	if errors.Is(err, store.ErrNotFound) {
		return identity{}, denied
	}
	if err != nil {
		s.log.Error("get enrollment token failed", "err", err)
		return identity{}, &reqError{http.StatusInternalServerError, "enrollment token lookup failed; retry", ""}
	}
	if !attest.TokenMatches(t.Hash, req.EnrollmentToken) || now.After(t.ExpiresAt) {
		return identity{}, denied
	}
	if t.MachineID != "" && t.MachineID != req.MachineID {
		_ = s.store.Audit(r.Context(), store.Event{Type: store.EventRegisterRefused, Subject: "token " + t.ID, At: now,
			Detail: "enrollment token " + t.ID + " is for machine " + t.MachineID + ", presented by machine " + req.MachineID})
		return identity{}, &reqError{http.StatusForbidden, "machine_id: this enrollment token is for another machine", "machine_id"}
	}
	return identity{key: "enroll:" + req.MachineID, org: t.Org, role: t.Role, workspace: t.Workspace, channel: t.Channel, tokenID: t.ID}, nil
}
