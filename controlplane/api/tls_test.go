package api

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/molecule-ai/molecule-agent/controlplane/api/tlstest"
)

// tlsServer is a real TLS listener on loopback serving /healthz with a
// certificate for hosts signed by ca.
func tlsServer(t *testing.T, ca *tlstest.CA, hosts ...string) *httptest.Server {
	t.Helper()
	certPEM, keyPEM := ca.Issue(t, hosts...)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == PathHealthz {
			_, _ = w.Write([]byte(`{"status":"ok"}`))
			return
		}
		http.NotFound(w, r)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are the point
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// TestPinnedCA: a client given the control plane's private CA (the file
// control_plane.ca_file names) talks to it; any other CA, or none, fails
// with an error that says which setting to fix.
func TestPinnedCA(t *testing.T) {
	dir := t.TempDir()
	ca, other := tlstest.NewCA(t, "control plane CA"), tlstest.NewCA(t, "someone else's CA")
	srv := tlsServer(t, ca, "127.0.0.1")
	wrongName := tlsServer(t, ca, "fleet.example")
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caFile, otherFile, notPEM := write("ca.crt", ca.PEM), write("other.crt", other.PEM), write("junk.crt", []byte("not a certificate"))

	tests := []struct {
		name    string
		opts    Options
		newErr  string // error from New
		callErr string // error from the call; "" = success
	}{
		{"ca_file", Options{BaseURL: srv.URL, CAFile: caFile}, "", ""},
		{"RootCAs", Options{BaseURL: srv.URL, RootCAs: ca.Pool()}, "", ""},
		{"wrong CA", Options{BaseURL: srv.URL, CAFile: otherFile}, "", "set control_plane.ca_file to the CA that signed it"},
		{"system roots", Options{BaseURL: srv.URL}, "", "set control_plane.ca_file to the CA that signed it"},
		{"certificate for another name", Options{BaseURL: wrongName.URL, CAFile: caFile}, "", "fix control_plane.url or reissue the certificate"},
		{"ca_file missing", Options{BaseURL: srv.URL, CAFile: filepath.Join(dir, "nope.crt")}, "control_plane.ca_file", ""},
		{"ca_file not PEM", Options{BaseURL: srv.URL, CAFile: notPEM}, "control_plane.ca_file " + notPEM + ": no PEM certificate", ""},
		{"own HTTP client and CA", Options{BaseURL: srv.URL, CAFile: caFile, HTTPClient: &http.Client{}}, "apply to the default HTTP client only", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.RetryMax = -1
			c, err := New(tt.opts)
			if tt.newErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.newErr) {
					t.Fatalf("New = %v, want error containing %q", err, tt.newErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.rc.HTTPClient.CloseIdleConnections()
			err = c.Healthz(context.Background())
			switch {
			case tt.callErr == "" && err != nil:
				t.Errorf("Healthz over TLS: %v", err)
			case tt.callErr != "" && (err == nil || !strings.Contains(err.Error(), tt.callErr)):
				t.Errorf("Healthz = %v, want error containing %q", err, tt.callErr)
			}
		})
	}
}
