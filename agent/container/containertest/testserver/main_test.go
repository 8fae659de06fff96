//go:build unix

package main

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func do(t *testing.T, h http.Handler, method, path, body string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

func TestHandler(t *testing.T) {
	dir := t.TempDir()
	ready := handler(config{version: "v7", dataDir: dir})
	never := handler(config{version: "v8", neverReady: true, dataDir: dir})
	t.Setenv("APP_TEST_SECRET", "hunter2")
	sum := sha256.Sum256([]byte("hunter2"))

	tests := []struct {
		name       string
		h          http.Handler
		method     string
		path, body string
		wantCode   int
		wantBody   string
	}{
		{"health ready", ready, "GET", "/health", "", 200, "ok v7\n"},
		{"health never", never, "GET", "/health", "", 503, "never ready v8\n"},
		{"version", never, "GET", "/version", "", 200, "v8"},
		{"no data yet", ready, "GET", "/data", "", 404, "no data\n"},
		{"write data", ready, "PUT", "/data", "kept", 204, ""},
		{"read data", never, "GET", "/data", "", 200, "kept"},
		{"env hash", ready, "GET", "/env/APP_TEST_SECRET", "", 200, hex.EncodeToString(sum[:])},
		{"env unset", ready, "GET", "/env/APP_NOPE", "", 404, "unset\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := do(t, tt.h, tt.method, tt.path, tt.body)
			if code != tt.wantCode || body != tt.wantBody {
				t.Errorf("%s %s = %d %q, want %d %q", tt.method, tt.path, code, body, tt.wantCode, tt.wantBody)
			}
		})
	}
}
