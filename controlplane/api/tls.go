package api

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/hashicorp/go-cleanhttp"
)

// httpClient returns opts.HTTPClient, or a pooled client (10s per
// attempt) trusting opts.RootCAs or opts.CAFile when set.
func httpClient(opts Options) (*http.Client, error) {
	if opts.HTTPClient != nil {
		if opts.RootCAs != nil || opts.CAFile != "" {
			return nil, errors.New("api: RootCAs and CAFile apply to the default HTTP client only; set TLSClientConfig on yours")
		}
		return opts.HTTPClient, nil
	}
	hc := cleanhttp.DefaultPooledClient()
	hc.Timeout = 10 * time.Second
	pool := opts.RootCAs
	if opts.CAFile != "" {
		var err error
		if pool, err = LoadCAFile(opts.CAFile); err != nil {
			return nil, err
		}
	}
	if pool != nil {
		hc.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return hc, nil
}

// LoadCAFile reads a PEM bundle of CA certificates, the control plane's
// private CA (control_plane.ca_file).
func LoadCAFile(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("control_plane.ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("control_plane.ca_file %s: no PEM certificate in it; give the CA certificate that signed the control plane's", path)
	}
	return pool, nil
}

// tlsHint makes a certificate error say what to do.
func tlsHint(err error) error {
	var unknown x509.UnknownAuthorityError
	var verify *tls.CertificateVerificationError
	var host x509.HostnameError
	switch {
	case errors.As(err, &host):
		return fmt.Errorf("%w (the control plane's certificate is not for this host name: fix control_plane.url or reissue the certificate)", err)
	case errors.As(err, &unknown) || errors.As(err, &verify):
		return fmt.Errorf("%w (the control plane's certificate is not signed by a trusted CA: set control_plane.ca_file to the CA that signed it)", err)
	}
	return err
}
