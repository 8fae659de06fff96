//go:build unix

// Command testserver is the workload baked into the test images that
// containertest builds: a tiny HTTP server whose version, readiness and data
// directory are set by flags or environment, so one static binary yields
// healthy, never-ready and stateful variants of an image.
//
// Endpoints:
//
//	GET  /health   200 "ok <version>" (503 forever in never-ready mode)
//	GET  /version  the version string
//	GET  /data     the content of <data-dir>/data.txt (404 when absent)
//	PUT  /data     replaces <data-dir>/data.txt with the request body
//	GET  /env/NAME sha256 hex of the environment variable NAME (never its value)
//	GET  /file/PATH sha256 hex of the file /PATH (403 when unreadable)
//
// With -check URL it instead GETs URL once and exits 0 on 200, 1 otherwise:
// a Docker healthcheck command for an image without a shell.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "testserver:", err)
		os.Exit(1)
	}
}

type config struct {
	addr       string
	version    string
	neverReady bool
	dataDir    string
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func run(args []string) error {
	var c config
	fs := flag.NewFlagSet("testserver", flag.ContinueOnError)
	fs.StringVar(&c.addr, "addr", envOr("APP_ADDR", ":8080"), "listen address (env APP_ADDR)")
	fs.StringVar(&c.version, "version", envOr("APP_VERSION", "dev"), "version string (env APP_VERSION)")
	fs.BoolVar(&c.neverReady, "never-ready", envOr("APP_NEVER_READY", "") == "1", "answer /health with 503 forever (env APP_NEVER_READY=1)")
	fs.StringVar(&c.dataDir, "data-dir", envOr("APP_DATA_DIR", "/data"), "directory of data.txt (env APP_DATA_DIR)")
	check := fs.String("check", "", "GET this URL once; exit 0 on 200 (a healthcheck)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *check != "" {
		return checkURL(*check)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: handler(c), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func checkURL(url string) error {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %d", url, resp.StatusCode)
	}
	return nil
}

func handler(c config) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		if c.neverReady {
			http.Error(w, "never ready "+c.version, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "ok %s\n", c.version)
	})
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, c.version)
	})
	file := filepath.Join(c.dataDir, "data.txt")
	mux.HandleFunc("GET /data", func(w http.ResponseWriter, _ *http.Request) {
		b, err := os.ReadFile(file)
		if errors.Is(err, os.ErrNotExist) {
			http.Error(w, "no data", http.StatusNotFound)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = w.Write(b)
	})
	mux.HandleFunc("PUT /data", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err == nil {
			err = os.MkdirAll(c.dataDir, 0o755)
		}
		if err == nil {
			err = os.WriteFile(file, b, 0o644)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /env/{name}", func(w http.ResponseWriter, r *http.Request) {
		v, ok := os.LookupEnv(r.PathValue("name"))
		if !ok {
			http.Error(w, "unset", http.StatusNotFound)
			return
		}
		sum := sha256.Sum256([]byte(v))
		fmt.Fprint(w, hex.EncodeToString(sum[:]))
	})
	mux.HandleFunc("GET /file/{path...}", func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile("/" + r.PathValue("path"))
		switch {
		case errors.Is(err, os.ErrNotExist):
			http.Error(w, "no such file", http.StatusNotFound)
			return
		case errors.Is(err, os.ErrPermission):
			http.Error(w, "permission denied", http.StatusForbidden)
			return
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		sum := sha256.Sum256(b)
		fmt.Fprint(w, hex.EncodeToString(sum[:]))
	})
	return mux
}
