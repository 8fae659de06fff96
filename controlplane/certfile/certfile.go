// Package certfile serves the control plane's TLS certificate from a
// certificate and key file pair and picks up a renewed pair without a
// restart: every handshake reads both files (a few KiB; a connection is
// kept alive across many requests) and, if either differs from the pair in
// use, loads the pair again. A pair that does not load (half-written, key
// and certificate not matching) is logged and the previous certificate is
// served until a good pair appears.
package certfile

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
)

// Reloader holds the current certificate of a cert/key file pair.
type Reloader struct {
	certPath, keyPath string
	log               *slog.Logger

	mu   sync.Mutex
	cert *tls.Certificate
	pem  [2][]byte // the files cert was loaded from
	bad  [2][]byte // the last pair that failed to load, logged once
}

// New loads the pair once; an error names the flag to fix.
func New(certPath, keyPath string, log *slog.Logger) (*Reloader, error) {
	if certPath == "" || keyPath == "" {
		return nil, errors.New("--tls-cert and --tls-key go together: give both or neither")
	}
	r := &Reloader{certPath: certPath, keyPath: keyPath, log: log}
	files, err := r.read()
	if err != nil {
		return nil, err
	}
	c, err := tls.X509KeyPair(files[0], files[1])
	if err != nil {
		return nil, fmt.Errorf("--tls-cert %s / --tls-key %s: %w", certPath, keyPath, err)
	}
	r.cert, r.pem = &c, files
	return r, nil
}

// GetCertificate is tls.Config.GetCertificate: the pair as it is on disk
// now, or the last good one.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	files, err := r.read()
	switch {
	case err != nil:
		r.log.Warn("tls certificate files unreadable; serving the previous certificate", "err", err)
		return r.cert, nil
	case same(files, r.pem) || same(files, r.bad):
		return r.cert, nil
	}
	c, err := tls.X509KeyPair(files[0], files[1])
	if err != nil {
		r.bad = files
		r.log.Warn("tls certificate files changed but do not load; serving the previous certificate",
			"cert", r.certPath, "key", r.keyPath, "err", err)
		return r.cert, nil
	}
	r.cert, r.pem, r.bad = &c, files, [2][]byte{}
	r.log.Info("tls certificate reloaded", "cert", r.certPath, "not_after", c.Leaf.NotAfter)
	return r.cert, nil
}

// Config returns a server TLS config (TLS 1.2 or later) serving r.
func (r *Reloader) Config() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate}
}

func (r *Reloader) read() ([2][]byte, error) {
	var out [2][]byte
	for i, p := range []string{r.certPath, r.keyPath} {
		b, err := os.ReadFile(p)
		if err != nil {
			return out, fmt.Errorf("tls certificate: %w", err)
		}
		out[i] = b
	}
	return out, nil
}

func same(a, b [2][]byte) bool { return bytes.Equal(a[0], b[0]) && bytes.Equal(a[1], b[1]) }
