package certfile

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/molecule-ai/molecule-agent/controlplane/api/tlstest"
)

// serve runs a TLS listener on loopback with r's config and returns a
// function that does one fresh handshake and returns the serial served.
func serve(t *testing.T, r *Reloader, ca *tlstest.CA) func() string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", r.Config())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			_ = c.Close()
		}
	}()
	return func() string {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"})
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
}

// replace writes b to path the way a certificate renewer does: a new file
// renamed over the old one.
func replace(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// mustLeaf returns the serial number of the PEM certificate.
func mustLeaf(t *testing.T, certPEM []byte) string {
	t.Helper()
	blk, _ := pem.Decode(certPEM)
	if blk == nil {
		t.Fatal("no PEM block")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber.String()
}

func TestReloadsRenewedPair(t *testing.T) {
	ca := tlstest.NewCA(t, "test CA")
	dir := t.TempDir()
	f := ca.WriteFiles(t, dir, "127.0.0.1")
	first := mustLeaf(t, mustRead(t, f.Cert))
	r, err := New(f.Cert, f.Key, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	handshake := serve(t, r, ca)
	if got := handshake(); got != first {
		t.Fatalf("served serial %s, want the loaded %s", got, first)
	}

	// A renewed pair is served from the next handshake on, no restart.
	c2, k2 := ca.Issue(t, "127.0.0.1")
	replace(t, f.Key, k2)
	replace(t, f.Cert, c2)
	second := mustLeaf(t, c2)
	if got := handshake(); got != second {
		t.Errorf("after renewal served serial %s, want the new %s", got, second)
	}

	// A broken pair (key of another certificate, as mid-renewal) keeps the
	// last good certificate in service.
	_, k3 := ca.Issue(t, "127.0.0.1")
	replace(t, f.Key, k3)
	if got := handshake(); got != second {
		t.Errorf("with a mismatched key served serial %s, want the previous %s", got, second)
	}
	// The matching certificate arrives: served.
	c4, k4 := ca.Issue(t, "127.0.0.1")
	replace(t, f.Key, k4)
	replace(t, f.Cert, c4)
	if got, want := handshake(), mustLeaf(t, c4); got != want {
		t.Errorf("after the fixed pair served serial %s, want %s", got, want)
	}
}

func TestNewRefuses(t *testing.T) {
	ca := tlstest.NewCA(t, "test CA")
	dir := t.TempDir()
	f := ca.WriteFiles(t, dir, "127.0.0.1")
	_, otherKey := ca.Issue(t, "127.0.0.1")
	mismatched := filepath.Join(dir, "other.key")
	if err := os.WriteFile(mismatched, otherKey, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, cert, key, want string
	}{
		{"key only", "", f.Key, "--tls-cert and --tls-key go together"},
		{"cert only", f.Cert, "", "--tls-cert and --tls-key go together"},
		{"missing file", filepath.Join(dir, "nope.crt"), f.Key, "nope.crt"},
		{"key of another certificate", f.Cert, mismatched, "--tls-cert " + f.Cert},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cert, tt.key, slog.New(slog.DiscardHandler))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New = %v, want error containing %q", err, tt.want)
			}
		})
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
