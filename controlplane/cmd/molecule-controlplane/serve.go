package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
	"github.com/molecule-ai/molecule-agent/controlplane/attest"
	"github.com/molecule-ai/molecule-agent/controlplane/certfile"
	"github.com/molecule-ai/molecule-agent/controlplane/server"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

type serveOpts struct {
	listen, db, adminTokenFile, logLevel string
	tlsCert, tlsKey                      string
	awsCerts                             []string
	attestWindow                         time.Duration
	interval, grace, flushWindow         time.Duration
	hostRate, hostBurst                  float64
	shedFactor, massShare                float64
	massMin                              int
	restartHold                          time.Duration
	rollouts                             rolloutOpts
}

func (o *serveOpts) flags(cmd *cobra.Command, defaultDB string) {
	f := cmd.Flags()
	f.StringVar(&o.listen, "listen", "127.0.0.1:7070", "address to listen on")
	f.StringVar(&o.tlsCert, "tls-cert", "", "PEM certificate (chain) to serve HTTPS with; reloaded when the file changes (with --tls-key)")
	f.StringVar(&o.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	f.StringVar(&o.db, "db", defaultDB, "sqlite:///path/to/cp.db or postgres://user@host/db")
	f.StringVar(&o.adminTokenFile, "admin-token-file", "", "file holding the admin token (else $MOLECULE_CP_ADMIN_TOKEN)")
	f.StringArrayVar(&o.awsCerts, "aws-cert", nil, "PEM file of an AWS region's instance identity certificate (repeatable); none: enrollment only")
	f.DurationVar(&o.attestWindow, "attest-window", 15*time.Minute, "how old an identity document's pendingTime may be")
	f.DurationVar(&o.interval, "interval", 10*time.Second, "heartbeat interval given to agents")
	f.DurationVar(&o.grace, "grace", 2*time.Second, "added to 3 missed intervals before a host is offline")
	f.DurationVar(&o.flushWindow, "flush-window", 5*time.Second, "how often live state is written to the database (at most 5s)")
	f.Float64Var(&o.hostRate, "host-rate", 1, "requests per second allowed per host")
	f.Float64Var(&o.hostBurst, "host-burst", 5, "burst of requests allowed per host")
	f.Float64Var(&o.shedFactor, "shed-factor", 1.5, "agent requests per second allowed above which the server answers 429 + Retry-After, as a multiple of hosts/interval (at least 200/s); negative disables")
	f.Float64Var(&o.massShare, "mass-silence-share", 0.5, "when more than this share of online hosts are silent at once, mark nobody offline (1 disables)")
	f.IntVar(&o.massMin, "mass-silence-min", 10, "fewest silent hosts that can be a mass silence")
	f.DurationVar(&o.restartHold, "restart-hold", 0, "after a start, mark nobody offline for this long (default and minimum: 3 intervals + grace); set above the agents' longest retry backoff")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	o.rollouts.flags(cmd)
}

func serveCmd(e env) *cobra.Command {
	var o serveOpts
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the control plane",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tok, err := adminToken(o.adminTokenFile, e)
			if err != nil {
				return err
			}
			return serve(cmd.Context(), o, tok, func(string) {})
		},
	}
	o.flags(cmd, "sqlite:///var/lib/molecule-controlplane/cp.db")
	return cmd
}

// serve runs the control plane until ctx ends, then shuts down gracefully:
// stop accepting, drain requests, flush live state, close the store.
// ready is called with the base URL once it listens.
func serve(ctx context.Context, o serveOpts, admin secret.Secret, ready func(url string)) error {
	log, err := newLogger(o.logLevel)
	if err != nil {
		return err
	}
	var verifier *attest.Verifier
	if len(o.awsCerts) > 0 {
		var certs []*x509.Certificate
		for _, p := range o.awsCerts {
			b, err := os.ReadFile(p)
			if err != nil {
				return fmt.Errorf("--aws-cert: %w", err)
			}
			c, err := attest.ParseCertificatesPEM(b)
			if err != nil {
				return fmt.Errorf("--aws-cert %s: %w", p, err)
			}
			certs = append(certs, c...)
		}
		if verifier, err = attest.NewVerifier(certs, o.attestWindow); err != nil {
			return fmt.Errorf("--attest-window: %w", err)
		}
	}
	var certs *certfile.Reloader
	if o.tlsCert != "" || o.tlsKey != "" {
		if certs, err = certfile.New(o.tlsCert, o.tlsKey, log); err != nil {
			return err
		}
	}
	st, err := store.Open(ctx, o.db, log)
	if err != nil {
		return err
	}
	defer func() { _ = st.Close() }()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg := server.Config{
		Store: st, Verifier: verifier, AdminToken: admin, Logger: log, Registry: reg,
		Interval: o.interval, Grace: o.grace, FlushWindow: o.flushWindow, HostRate: o.hostRate, HostBurst: o.hostBurst,
		ShedFactor: o.shedFactor, MassSilenceShare: o.massShare, MassSilenceMin: o.massMin,
		RestartHold: o.restartHold,
	}
	if err := o.rollouts.config(&cfg); err != nil {
		return err
	}
	srv, err := server.New(ctx, cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", o.listen, err)
	}
	scheme := "http"
	if certs != nil {
		ln, scheme = tls.NewListener(ln, certs.Config()), "https"
	}
	hs := &http.Server{
		Handler: srv.Handler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 15 * time.Second,
		WriteTimeout: 15 * time.Second, IdleTimeout: 120 * time.Second, MaxHeaderBytes: 16 << 10,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	runDone := make(chan error, 1)
	go func() { runDone <- srv.Run(runCtx) }()
	serveDone := make(chan error, 1)
	go func() { serveDone <- hs.Serve(ln) }()
	url := scheme + "://" + ln.Addr().String()
	log.Info("control plane listening", "url", url, "version", version, "imds_attestation", verifier != nil, "tls", certs != nil)
	ready(url)

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-serveDone:
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		log.Warn("graceful shutdown cut short", "err", err)
		_ = hs.Close()
	}
	stopRun()
	runErr := <-runDone
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", serveErr)
	}
	return runErr
}
