//go:build unix

package workspace

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// get asks the tenant for the workspace; status 0 means unreachable.
func (c *Checker) get(ctx context.Context) (int, workspaceInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return 0, workspaceInfo{}, err
	}
	if c.o.OrgID != "" {
		req.Header.Set(OrgHeader, c.o.OrgID)
	}
	resp, err := c.o.Client.Do(req)
	if err != nil {
		return 0, workspaceInfo{}, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, workspaceInfo{}, nil
	}
	status, err := ParseWorkspaceStatus(body)
	info := workspaceInfo{status: status}
	var up struct {
		Uptime *int `json:"uptime_seconds"`
	}
	if json.Unmarshal(body, &up) == nil && up.Uptime != nil {
		info.uptime, info.hasUptime = *up.Uptime, true
	}
	return resp.StatusCode, info, err
}

// probeToken asks the tenant whether it accepts the runtime's token:
// GET /workspaces/{id}/state under WorkspaceAuth. It returns the status
// code, 0 when there is no token file yet or the tenant is unreachable.
func (c *Checker) probeToken(ctx context.Context) int {
	if c.o.TokenFile == "" {
		return 0
	}
	tok := readTokenFile(c.o.TokenFile)
	if tok == "" {
		return 0
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url+"/state", nil)
	if err != nil {
		return 0
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if c.o.OrgID != "" {
		req.Header.Set(OrgHeader, c.o.OrgID)
	}
	resp, err := c.o.Client.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode
}

// workspaceInfo is what the checker uses of GET /workspaces/{id}.
type workspaceInfo struct {
	status    string
	uptime    int // uptime_seconds of the last heartbeat
	hasUptime bool
}

// ParseWorkspaceStatus reads "status" from a GET /workspaces/{id} answer.
func ParseWorkspaceStatus(body []byte) (string, error) {
	var w struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(body, &w); err != nil {
		return "", fmt.Errorf("tenant answered GET /workspaces/{id} with invalid JSON: %w", err)
	}
	if w.Status == "" {
		return "", fmt.Errorf("tenant answered GET /workspaces/{id} without a status")
	}
	return w.Status, nil
}

// check polls once and updates the status.
func (c *Checker) check(ctx context.Context) {
	code, info, err := c.get(ctx)
	if ctx.Err() != nil {
		return
	}
	ws := info.status
	tokenCode := 0
	if code == http.StatusOK && ws != "removed" {
		tokenCode = c.probeToken(ctx)
	}
	c.mu.Lock()
	c.st.UptimeSeconds = info.uptime
	c.st.Checks++
	c.st.LastCheck = c.now()
	c.st.HTTPStatus, c.st.WorkspaceStatus = code, ws
	removedNow := false
	switch {
	case err != nil && code == 0:
		c.st.Registration, c.st.Detail = NotRegistered, "tenant unreachable: "+err.Error()
	case err != nil:
		c.st.Registration, c.st.Detail = NotRegistered, err.Error()
	case code == http.StatusOK && ws == "removed":
		removedNow = true
	case code == http.StatusOK:
		c.seenFound, c.notFound, c.confirmed = true, 0, true
		c.onFound(info, tokenCode)
		c.tokenRejected = tokenCode == http.StatusUnauthorized
	case code == http.StatusNotFound:
		c.notFound++
		if c.seenFound && c.notFound >= removedAfter404s {
			removedNow = true
		} else {
			c.st.Registration = NotRegistered
			c.st.Detail = "tenant answered 404: the workspace does not exist there, or " + OrgHeader +
				" is not this tenant's org id (check the configured org)"
		}
	default:
		c.st.Registration = NotRegistered
		c.st.Detail = fmt.Sprintf("tenant answered %d to GET /workspaces/{id}", code)
	}
	if !removedNow && c.st.Registration != Registered && c.runCode == 0 && !c.runStart.IsZero() &&
		!c.timedOut && c.now().Sub(c.runStart) >= c.o.RegisterTimeout {
		// No register answer in the output and not online: treat like a 401.
		c.timedOut, c.stale = true, true
	}
	if !removedNow && c.st.Registration != Registered && c.runCode == http.StatusUnauthorized {
		c.st.Registration = TokenRejected
		c.st.Detail = c.staleDetail
		if c.st.Detail == "" {
			c.st.Detail = "the runtime's register got 401: stale workspace token"
		}
	}
	alreadyRemoved := c.removed
	c.mu.Unlock()
	if removedNow && !alreadyRemoved && c.o.State != nil {
		// Persisted first: an agent restart from here on never starts the runtime.
		if err := c.o.State.MarkRemoved(c.now()); err != nil {
			c.log.Error("workspace removed, but recording it failed: an agent restart could start the runtime", "err", err)
		}
	}
	c.mu.Lock()
	if removedNow {
		c.removed = true
		c.st.Registration = Removed
		c.st.Detail = "workspace removed on the tenant; runtime stopped and not restarted"
	}
	st := c.st
	registeredNow := st.Registration == Registered && c.runCode == http.StatusOK && c.st.LastRegister.Before(c.runStart)
	if registeredNow {
		c.st.LastRegister = c.now()
		st = c.st
	}
	c.mu.Unlock()
	if registeredNow && c.o.State != nil {
		if err := c.o.State.Registered(st.LastRegister); err != nil {
			c.log.Warn("record the registration", "err", err)
		}
	}
	c.logChange(st)
	if removedNow && !alreadyRemoved {
		c.log.Warn("workspace removed on the tenant: stopping the runtime for good", "http_status", code, "workspace_status", ws)
		if c.o.Stop != nil {
			c.o.Stop()
		}
	}
}

// onFound handles a 200 answer; c.mu is held.
func (c *Checker) onFound(info workspaceInfo, tokenCode int) {
	ws := info.status
	switch {
	case alive(ws) && c.runCode == http.StatusUnauthorized:
		// The tenant still shows the previous run's registration.
		c.st.Registration = NotRegistered
	case alive(ws) && !c.ownRegistration(info):
		// online may be the previous run's, for up to the 180 s liveness TTL.
		c.st.Registration = NotRegistered
		c.st.Detail = "workspace status is " + ws + ", but no register or heartbeat of this start seen yet"
	case alive(ws) && tokenCode == http.StatusUnauthorized:
		// Registered at start, but the token was revoked since: the
		// runtime's heartbeats 401 silently, or pass while no token is live.
		c.st.Registration = TokenRejected
		c.st.Detail = "the tenant rejects the runtime's token (GET /workspaces/{id}/state answered 401)"
		if c.staleDetail != "" {
			c.st.Detail = c.staleDetail
		}
		if !c.tokenRejected {
			c.stale = true
		}
	case alive(ws):
		c.st.Registration, c.st.Detail = Registered, ""
		c.attempted, c.staleDetail = false, ""
		if c.st.TokenRecovery == RecoveryRestarted || c.st.TokenRecovery == RecoveryFailed {
			c.st.TokenRecovery = RecoveryRecovered
		}
	default:
		c.st.Registration = NotRegistered
		c.st.Detail = "workspace status is " + ws
	}
}

// ownRegistration reports whether the tenant shows a register or
// heartbeat of the runtime's current start: its register line answered 200,
// or (output not seen) the tenant's uptime_seconds is younger than this
// start. c.mu is held.
func (c *Checker) ownRegistration(info workspaceInfo) bool {
	if c.runStart.IsZero() {
		return false
	}
	if c.runCode != 0 {
		return c.runCode == http.StatusOK
	}
	return info.hasUptime && time.Duration(info.uptime)*time.Second <= c.now().Sub(c.runStart)+time.Second
}

// alive reports whether a workspace status means registered and
// heartbeating: online, or degraded (wedged or erroring, still registered).
func alive(ws string) bool { return ws == "online" || ws == "degraded" }

// recover handles a stale token: refresh, restart once if it changed.
func (c *Checker) recover(ctx context.Context) {
	c.mu.Lock()
	if c.removed || c.st.Registration == Registered {
		c.mu.Unlock()
		return
	}
	if c.attempted {
		c.st.TokenRecovery = RecoveryFailed
		c.st.Detail = "the tenant still rejects the workspace token after a refresh and one restart; put a valid token in " +
			c.o.TokenLocation + " (the runtime restarts when it changes)"
		c.staleDetail = c.st.Detail
		c.mu.Unlock()
		c.log.Error("workspace token rejected again after a refresh and restart; not restarting again", "token", c.o.TokenLocation)
		return
	}
	c.mu.Unlock()
	changed := false
	if c.o.RefreshToken != nil {
		var err error
		changed, err = c.o.RefreshToken(ctx)
		if err != nil {
			c.mu.Lock()
			c.stale = true // try again at the next poll
			c.st.Detail = "workspace token rejected; fetching it again failed: " + err.Error()
			c.mu.Unlock()
			c.log.Warn("workspace token rejected; secrets refresh failed, will retry", "err", err)
			return
		}
	}
	if changed && c.o.State != nil {
		ok, err := c.o.State.TakeRecoveryRestart()
		if err != nil {
			c.log.Warn("record the token-recovery restart", "err", err)
		}
		if !ok {
			c.mu.Lock()
			c.attempted = true
			c.st.TokenRecovery = RecoveryFailed
			c.st.Detail = fmt.Sprintf("workspace token rejected; %d token-recovery restarts since the last registration "+
				"(across agent restarts) is the limit: put a valid token in %s", MaxRecoveryRestarts, c.o.TokenLocation)
			c.staleDetail = c.st.Detail
			c.mu.Unlock()
			c.log.Error("workspace token rejected; token-recovery restart limit reached, not restarting", "limit", MaxRecoveryRestarts)
			return
		}
	}
	if !changed && c.o.NoSourceToken != nil && c.o.NoSourceToken() {
		changed = true // flow (b): a restart registers tokenless, minting one if none is live
		if c.o.State != nil {
			if ok, _ := c.o.State.TakeRecoveryRestart(); !ok {
				changed = false
			}
		}
	}
	c.mu.Lock()
	c.attempted = true
	if !changed {
		c.st.TokenRecovery = RecoveryFailed
		c.st.Detail = "the tenant rejects the workspace token and " + c.o.TokenLocation +
			" still holds the same one; rotate it there (the runtime restarts when it changes)"
		c.staleDetail = c.st.Detail
		c.mu.Unlock()
		c.log.Error("workspace token rejected and unchanged in the secrets source; not restarting", "token", c.o.TokenLocation)
		return
	}
	c.st.TokenRecovery = RecoveryRestarted
	c.st.Detail = "workspace token rejected; restarted the runtime with the refreshed token"
	c.staleDetail = c.st.Detail
	c.mu.Unlock()
	c.log.Warn("workspace token rejected; restarting the runtime once with the refreshed token")
	if c.o.Restart != nil {
		if err := c.o.Restart(ctx, "workspace token rejected by the tenant; using the refreshed token"); err != nil {
			c.log.Error("restart runtime after token refresh", "err", err)
		}
	}
}

// logChange logs a registration change once.
func (c *Checker) logChange(st Status) {
	key := st.Registration + "|" + st.Detail
	c.mu.Lock()
	same := key == c.lastLogged
	c.lastLogged = key
	c.mu.Unlock()
	if same {
		return
	}
	if st.Registration == Registered {
		c.log.Info("workspace registered with the tenant", "workspace_status", st.WorkspaceStatus)
		return
	}
	c.log.Info("workspace not registered yet", "registration", st.Registration, "http_status", st.HTTPStatus,
		"workspace_status", st.WorkspaceStatus, "detail", st.Detail)
}
