package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
)

// metadata reads instance tags and the region through IMDSv2 only: a
// client that cannot get a session token fails instead of falling back
// to IMDSv1.
type metadata struct {
	c *imds.Client
}

func newMetadata(endpoint string) *metadata {
	return &metadata{c: imds.New(imds.Options{
		Endpoint:          endpoint, // "" = the default link-local address
		ClientEnableState: imds.ClientEnabled,
		EnableFallback:    aws.FalseTernary,
	})}
}

func (m *metadata) get(ctx context.Context, path string) (string, error) {
	out, err := m.c.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
	if err != nil {
		return "", err
	}
	defer out.Content.Close()
	b, err := io.ReadAll(io.LimitReader(out.Content, 64<<10))
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// tags returns the instance's tags. Tags in metadata must be enabled on
// the instance (InstanceMetadataTags=enabled); without it IMDS answers 404.
func (m *metadata) tags(ctx context.Context) (map[string]string, error) {
	list, err := m.get(ctx, "tags/instance")
	if err != nil {
		if isNotFound(err) {
			return nil, errors.New("instance tags are not in metadata: pass the flags, or launch with InstanceMetadataTags=enabled")
		}
		return nil, fmt.Errorf("read instance tags from IMDS: %w", err)
	}
	tags := map[string]string{}
	for _, k := range strings.Fields(list) {
		if !strings.HasPrefix(k, "molecule:") {
			continue
		}
		v, err := m.get(ctx, "tags/instance/"+k)
		if err != nil {
			return nil, fmt.Errorf("read instance tag %s from IMDS: %w", k, err)
		}
		tags[k] = strings.TrimSpace(v)
	}
	return tags, nil
}

func (m *metadata) region(ctx context.Context) (string, error) {
	out, err := m.c.GetRegion(ctx, &imds.GetRegionInput{})
	if err != nil {
		return "", fmt.Errorf("read the region from IMDS (or pass --region): %w", err)
	}
	return out.Region, nil
}

func isNotFound(err error) bool {
	var se interface{ HTTPStatusCode() int }
	return errors.As(err, &se) && se.HTTPStatusCode() == 404
}
