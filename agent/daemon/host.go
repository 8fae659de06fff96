//go:build unix

package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/identity"
	"github.com/molecule-ai/molecule-agent/agent/secretstore"
	"github.com/molecule-ai/molecule-agent/agent/workspace"
	"github.com/molecule-ai/molecule-agent/controlplane/api"
)

// host is this machine as the control plane and the workspace platform see
// it, built once: its boot, its name, and its identity (the EC2 instance
// identity document over IMDSv2, or an enrollment token off EC2).
type host struct {
	bootID   string
	bootErr  error
	hostname string
	// imds is nil in enrollment mode unless interruptions are watched.
	imds       *identity.Client
	enrollment bool
	tokenRef   string
	store      *secretstore.Store

	mu  sync.Mutex
	doc *identity.Identity
}

func newHost(cfg *config.Config, store *secretstore.Store, log *slog.Logger) *host {
	h := &host{enrollment: cfg.Identity.Mode == "enrollment", tokenRef: cfg.Identity.EnrollmentToken, store: store}
	h.bootID, h.bootErr = bootID()
	h.hostname, _ = os.Hostname()
	if !h.enrollment || cfg.Identity.WatchInterruptions {
		h.imds = identity.New(identity.Options{Endpoint: cfg.Identity.IMDSEndpoint, Logger: log})
	}
	return h
}

// bootID identifies this boot of the machine; a reboot registers again.
func bootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("boot id: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// document returns the instance identity, fetched from IMDS once.
func (h *host) document(ctx context.Context) (identity.Identity, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.doc != nil {
		return *h.doc, nil
	}
	id, err := h.imds.Identity(ctx)
	if err != nil {
		return identity.Identity{}, err
	}
	h.doc = &id
	return id, nil
}

// proof is how the host proves its identity when it registers.
func (h *host) proof(ctx context.Context) (api.Proof, error) {
	if h.enrollment {
		tok, err := enrollmentToken(h.tokenRef, h.store)
		if err != nil {
			return api.Proof{}, err
		}
		mid, _ := os.ReadFile("/etc/machine-id")
		return api.Proof{EnrollmentToken: tok, MachineID: strings.TrimSpace(string(mid))}, nil
	}
	id, err := h.document(ctx)
	if err != nil {
		return api.Proof{}, err
	}
	return api.Proof{IdentityPKCS7: id.PKCS7, IdentityDocument: string(id.Document)}, nil
}

// enrollmentToken reads identity.enrollment_token: "file:<path>" or "secret:<name>".
func enrollmentToken(ref string, store *secretstore.Store) (secretstore.Secret, error) {
	if path, ok := strings.CutPrefix(ref, "file:"); ok {
		b, err := os.ReadFile(path)
		if err != nil {
			return secretstore.Secret{}, fmt.Errorf("identity.enrollment_token: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return secretstore.Secret{}, fmt.Errorf("identity.enrollment_token: %s is empty", path)
		}
		return secretstore.New(tok), nil
	}
	if store == nil {
		return secretstore.Secret{}, errors.New("identity.enrollment_token names a secret but secrets.source is not set")
	}
	return store.Resolve(ref)
}

// privateIP is the address the workspace runtime registers: the private
// IPv4 from IMDS, or (off EC2) the first non-loopback IPv4.
func (h *host) privateIP(ctx context.Context) (string, error) {
	if !h.enrollment {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		id, err := h.document(ctx)
		if err != nil {
			return "", fmt.Errorf("workspace host IP from IMDS: %w (set workspace.host_ip off EC2)", err)
		}
		return id.PrivateIPv4, nil
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", fmt.Errorf("workspace host IP: %w; set workspace.host_ip", err)
	}
	return workspace.PickHostIP(addrs)
}
