//go:build unix

package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/molecule-ai/molecule-agent/agent/identity"
)

// metadata reads instance tags and the region through agent/identity's
// IMDSv2-only client.
type metadata struct {
	c *identity.Client
}

func newMetadata(endpoint string) *metadata {
	return &metadata{c: identity.New(identity.Options{Endpoint: endpoint})}
}

// tags returns the instance's molecule:* tags. Tags in metadata must be
// enabled on the instance (InstanceMetadataTags=enabled).
func (m *metadata) tags(ctx context.Context) (map[string]string, error) {
	all, err := m.c.Tags(ctx)
	if errors.Is(err, identity.ErrNotFound) {
		return nil, errors.New("instance tags are not in metadata: pass the flags, or launch with InstanceMetadataTags=enabled")
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read instance tags: %w", err)
	}
	tags := map[string]string{}
	for k, v := range all {
		if strings.HasPrefix(k, "molecule:") {
			tags[k] = strings.TrimSpace(v)
		}
	}
	return tags, nil
}

func (m *metadata) region(ctx context.Context) (string, error) {
	r, err := m.c.Metadata(ctx, "placement/region")
	if err != nil {
		return "", fmt.Errorf("pass --region, or let IMDS answer: %w", err)
	}
	return strings.TrimSpace(r), nil
}
