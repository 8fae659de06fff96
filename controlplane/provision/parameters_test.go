package provision_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/molecule-ai/molecule-agent/agent/secretstore/ssmtest"
	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
	"github.com/molecule-ai/molecule-agent/controlplane/provision"
)

const prefix = "/molecule/prod/tenants/acme"

func TestParameters(t *testing.T) {
	t.Parallel()
	s := ssmtest.New(t)
	log, logs := newLog()
	p := provision.NewParameters(ssmClient(t, s), fast, log)
	ctx := t.Context()

	s.Throttle(2)
	wrote, err := p.Ensure(ctx, prefix+"/db-password", secret.New("pw-first-0f9e8d"))
	if err != nil || !wrote {
		t.Fatalf("Ensure = %v, %v; want written after the throttling", wrote, err)
	}
	// A resumed job generates another password: the first one stays.
	wrote, err = p.Ensure(ctx, prefix+"/db-password", secret.New("pw-second-7a6b5c"))
	if err != nil || wrote {
		t.Errorf("Ensure again = %v, %v; want kept", wrote, err)
	}
	if typ, v, _ := s.Value(prefix + "/db-password"); v != "pw-first-0f9e8d" || typ != ssmtest.SecureString {
		t.Errorf("db-password = %s %q, want the first value as a SecureString", typ, v)
	}
	if err := p.Set(ctx, prefix+"/platform-url", secret.New("https://a")); err != nil {
		t.Fatal(err)
	}
	if err := p.Set(ctx, prefix+"/platform-url", secret.New("https://b")); err != nil {
		t.Fatal(err)
	}
	if _, v, _ := s.Value(prefix + "/platform-url"); v != "https://b" {
		t.Errorf("platform-url = %q, want overwritten", v)
	}
	for i := range 23 {
		if err := p.Set(ctx, fmt.Sprintf("%s/env/K%02d", prefix, i), secret.New(fmt.Sprintf("v-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	s.PutSecure("/molecule/prod/tenants/acme-two/admin-token", "other-org")

	names, err := p.Names(ctx, prefix)
	if err != nil || len(names) != 25 {
		t.Fatalf("Names = %d, %v; want 25", len(names), err)
	}
	s.Throttle(1)
	n, err := p.DeleteAll(ctx, prefix)
	if err != nil || n != 25 {
		t.Fatalf("DeleteAll = %d, %v; want 25", n, err)
	}
	if left := s.Names("/molecule"); !slices.Equal(left, []string{"/molecule/prod/tenants/acme-two/admin-token"}) {
		t.Errorf("left = %v, want only the other org's parameter", left)
	}
	if n, err := p.DeleteAll(ctx, prefix); err != nil || n != 0 {
		t.Errorf("DeleteAll again = %d, %v; want 0, nil", n, err)
	}
	for _, r := range s.Requests() {
		if r.Op == "GetParametersByPath" && r.WithDecryption {
			t.Error("listing names decrypted the values")
		}
	}
	noSecrets(t, "the log", logs.String(), "pw-first-0f9e8d", "pw-second-7a6b5c", "v-1")
}

func TestParametersDenied(t *testing.T) {
	t.Parallel()
	s := ssmtest.New(t)
	p := provision.NewParameters(ssmClient(t, s), fast, nil)
	s.Deny(prefix)
	_, err := p.Ensure(t.Context(), prefix+"/admin-token", secret.New("adm-5e4d3c2b"))
	if !errors.Is(err, provision.ErrDenied) || !strings.Contains(err.Error(), "grant ssm:PutParameter") {
		t.Errorf("error = %v, want ErrDenied saying to grant ssm:PutParameter", err)
	}
	noSecrets(t, "the error", fmt.Sprint(err), "adm-5e4d3c2b")
	if _, err := p.DeleteAll(t.Context(), prefix); !errors.Is(err, provision.ErrDenied) {
		t.Errorf("DeleteAll denied: %v, want ErrDenied", err)
	}
	if _, err := p.Names(t.Context(), "/"); err == nil {
		t.Error("listing the whole store was allowed")
	}
}
