//go:build unix

package workspace

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// get asks the tenant for the workspace; status 0 means unreachable.
func (c *Checker) get(ctx context.Context) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return 0, "", err
	}
	if c.o.OrgID != "" {
		req.Header.Set(OrgHeader, c.o.OrgID)
	}
	resp, err := c.o.Client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, "", nil
	}
	status, err := ParseWorkspaceStatus(body)
	return resp.StatusCode, status, err
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
	code, ws, err := c.get(ctx)
	if ctx.Err() != nil {
		return
	}
	c.mu.Lock()
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
		c.seenFound, c.notFound = true, 0
		c.onFound(ws)
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
		c.st.Detail = c.staleDetail
		if c.st.Detail == "" {
			c.st.Detail = "the runtime's register got 401: stale workspace token"
		}
	}
	alreadyRemoved := c.removed
	if removedNow {
		c.removed = true
		c.st.Registration = Removed
		c.st.Detail = "workspace removed on the tenant; runtime stopped and not restarted"
	}
	st := c.st
	c.mu.Unlock()
	c.logChange(st)
	if removedNow && !alreadyRemoved {
		c.log.Warn("workspace removed on the tenant: stopping the runtime for good", "http_status", code, "workspace_status", ws)
		if c.o.Stop != nil {
			c.o.Stop()
		}
	}
}

// onFound handles a 200 answer; c.mu is held.
func (c *Checker) onFound(ws string) {
	switch {
	case alive(ws) && c.runCode == http.StatusUnauthorized:
		// The tenant still shows the previous run's registration.
		c.st.Registration = NotRegistered
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
