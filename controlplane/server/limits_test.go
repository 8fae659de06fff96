package server

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
)

// TestOversizedAndControlStringsRefused is issue 15's finding 8: a 250 KB
// unit name was stored and rendered, and invalid UTF-8 and control
// characters were stored. Each is now refused with 400 naming the field,
// and nothing of the request is kept.
func TestOversizedAndControlStringsRefused(t *testing.T) {
	c := startCP(t, "sqlite://"+t.TempDir()+"/cp.db")
	ctx := context.Background()
	r, err := c.enroll(c.token(t, api.EnrollmentTokenRequest{Org: "acme", Role: "tenant"}), "m-1", "boot-1", secret.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	post := func(path, token, body string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		w := httptest.NewRecorder()
		c.srv.Handler().ServeHTTP(w, req)
		var e api.Error
		_ = json.Unmarshal(w.Body.Bytes(), &e)
		return w.Code, e.Field
	}
	hb := "/v1/hosts/" + r.HostID + "/heartbeat"
	tok := r.HostToken.Reveal()
	for _, tt := range []struct{ name, path, body, field string }{
		{"250 KB unit name", hb, `{"boot_id":"boot-1","units":[{"name":"` + strings.Repeat("u", 250<<10) + `","state":"ready"}]}`, "units[0].name"},
		{"invalid UTF-8 in a detail", hb, `{"boot_id":"boot-1","units":[{"name":"a","state":"failed","detail":"` + "\xff\xfe" + `"}]}`, "units[0].detail"},
		{"terminal escape in a detail", hb, `{"boot_id":"boot-1","units":[{"name":"a","state":"failed","detail":"\u001b[2J"}]}`, "units[0].detail"},
		{"control character in a unit name", hb, `{"boot_id":"boot-1","units":[{"name":"a\u0000b","state":"ready"}]}`, "units[0].name"},
		{"newline in the hostname", api.PathRegister, `{"boot_id":"b","machine_id":"m-2","enrollment_token":"mek_x","hostname":"h\nX: y"}`, "hostname"},
		{"invalid UTF-8 in the org", api.PathRegister, `{"boot_id":"b","machine_id":"m-2","enrollment_token":"mek_x","org":"` + "\xc0" + `"}`, "org"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, field := post(tt.path, tok, tt.body)
			if code != http.StatusBadRequest || field != tt.field {
				t.Errorf("answered %d naming %q, want 400 naming %q", code, field, tt.field)
			}
		})
	}
	if err := c.srv.flush(ctx, c.srv.store.Flush); err != nil {
		t.Fatal(err)
	}
	h, err := c.st.GetHost(ctx, r.HostID)
	if err != nil || h.Report != "" {
		t.Errorf("a refused heartbeat was stored: %q, %v", h.Report, err)
	}
}
