package server

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// FuzzRequests feeds arbitrary bodies to register and heartbeat: the server
// must answer with a 2xx or a 4xx, never panic or 5xx.
func FuzzRequests(f *testing.F) {
	for _, s := range []string{`{}`, `{"boot_id":"b","enrollment_token":"mek_x","machine_id":"m"}`,
		`{"units":[{"name":"a","state":"ready","since":"2026-01-01T00:00:00Z"}],"tunnel":{"id":"t"}}`,
		`[`, `{"boot_id":1e999}`, "\x00", `{"identity_pkcs7":"MIIB"}`} {
		f.Add(s)
	}
	fx := newFixture(f)
	r := fx.enroll("fuzz")
	h := fx.srv.Handler()
	f.Fuzz(func(t *testing.T, body string) {
		fx.clock.Add(time.Hour) // refill the host's rate limit
		for _, path := range []string{"/v1/register", "/v1/hosts/" + r.HostID + "/heartbeat"} {
			req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader([]byte(body)))
			req.Header.Set("Authorization", "Bearer "+r.HostToken.Reveal())
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code >= 500 {
				t.Fatalf("%s answered %d to %q", path, rec.Code, body)
			}
		}
	})
}
