//go:build unix

package container

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/distribution/reference"
	"github.com/molecule-ai/molecule-agent/agent/secretstore"
)

// ParseAuth turns a registry credentials secret into the auth config Docker
// needs to pull from registryHost. The secret holds either a Docker
// config.json ({"auths":{"ghcr.io":{"auth":"base64(user:token)"}}}, or
// username/password fields instead of auth) or plain "user:token". Errors
// never quote the secret.
func ParseAuth(s secretstore.Secret, registryHost string) (AuthConfig, error) {
	v := strings.TrimSpace(s.Reveal())
	if v == "" {
		return AuthConfig{}, errors.New("registry credentials are empty")
	}
	if !strings.HasPrefix(v, "{") {
		user, token, ok := strings.Cut(v, ":")
		if !ok || user == "" || token == "" {
			return AuthConfig{}, errors.New("registry credentials are neither a Docker config.json nor user:token")
		}
		return AuthConfig{Username: user, Password: token, ServerAddress: registryHost}, nil
	}
	var cfg struct {
		Auths map[string]struct {
			Auth          string `json:"auth"`
			Username      string `json:"username"`
			Password      string `json:"password"`
			IdentityToken string `json:"identitytoken"`
		} `json:"auths"`
	}
	if err := json.Unmarshal([]byte(v), &cfg); err != nil {
		return AuthConfig{}, errors.New("registry credentials look like JSON but do not parse as a Docker config.json")
	}
	for host, a := range cfg.Auths {
		if normalizeHost(host) != registryHost {
			continue
		}
		out := AuthConfig{Username: a.Username, Password: a.Password, IdentityToken: a.IdentityToken, ServerAddress: registryHost}
		if a.Auth != "" {
			raw, err := base64.StdEncoding.DecodeString(a.Auth)
			if err != nil {
				return AuthConfig{}, fmt.Errorf("auths[%q].auth is not base64", host)
			}
			user, pass, ok := strings.Cut(string(raw), ":")
			if !ok {
				return AuthConfig{}, fmt.Errorf("auths[%q].auth is not base64(user:token)", host)
			}
			out.Username, out.Password = user, pass
		}
		return out, nil
	}
	return AuthConfig{}, fmt.Errorf("registry credentials have no entry for %s: add it under auths", registryHost)
}

func normalizeHost(h string) string {
	h = strings.TrimPrefix(strings.TrimPrefix(h, "https://"), "http://")
	h, _, _ = strings.Cut(h, "/")
	if h == "index.docker.io" || h == "registry-1.docker.io" {
		return "docker.io"
	}
	return h
}

// RegistryHost returns the registry part of an image reference
// ("ghcr.io", "127.0.0.1:5000", "docker.io").
func RegistryHost(image string) (string, error) {
	ref, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return "", fmt.Errorf("parse image %q: %w", image, err)
	}
	return reference.Domain(ref), nil
}

// SecretAuth returns an AuthFunc that reads the credentials secret name
// through get (such as (*secretstore.Store).Get) before every pull, so rotated
// credentials apply at the next pull.
func SecretAuth(get func(name string) (secretstore.Secret, bool), name string) AuthFunc {
	return func(_ context.Context, image string) (AuthConfig, error) {
		s, ok := get(name)
		if !ok {
			return AuthConfig{}, fmt.Errorf("registry credentials secret %q is missing: add the parameter %s under the host's prefix", name, name)
		}
		host, err := RegistryHost(image)
		if err != nil {
			return AuthConfig{}, err
		}
		a, err := ParseAuth(s, host)
		if err != nil {
			return AuthConfig{}, fmt.Errorf("secret %s: %w", name, err)
		}
		return a, nil
	}
}
