//go:build unix

// Package identity reads this EC2 instance's identity from the Instance
// Metadata Service, IMDSv2 only (a session token on every request, never the
// IMDSv1 fallback), and watches for spot interruption and Auto Scaling
// termination notices.
package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// DefaultEndpoint is the IPv4 IMDS endpoint.
const DefaultEndpoint = "http://169.254.169.254"

// maxBody bounds any metadata value read.
const maxBody = 64 << 10

// Options configure a Client.
type Options struct {
	// Endpoint overrides DefaultEndpoint (tests, IPv6 http://[fd00:ec2::254]).
	Endpoint string
	// HTTPClient overrides the SDK's HTTP client.
	HTTPClient *http.Client
	// Logger receives the watcher's state changes.
	Logger *slog.Logger
}

// Client reads instance metadata over IMDSv2.
type Client struct {
	api      *imds.Client
	endpoint string
	log      *slog.Logger
}

// New returns a client. It makes no request.
func New(o Options) *Client {
	if o.Endpoint == "" {
		o.Endpoint = DefaultEndpoint
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	opts := imds.Options{
		Endpoint:          o.Endpoint,
		ClientEnableState: imds.ClientEnabled,
		EnableFallback:    aws.FalseTernary, // IMDSv2 only: a token failure is an error, never a tokenless GET
	}
	if o.HTTPClient != nil {
		opts.HTTPClient = o.HTTPClient
	}
	return &Client{api: imds.New(opts), endpoint: o.Endpoint, log: o.Logger}
}

// Identity is what the agent knows about its instance. Document and PKCS7
// are byte-exact as IMDS served them: the control plane verifies PKCS7
// (base64 DER SignedData embedding Document, no certificates inside)
// against AWS's regional certificate.
type Identity struct {
	InstanceID       string            `json:"instance_id"`
	Region           string            `json:"region"`
	AvailabilityZone string            `json:"availability_zone"`
	PrivateIPv4      string            `json:"private_ipv4"`
	AccountID        string            `json:"account_id"`
	InstanceType     string            `json:"instance_type"`
	ImageID          string            `json:"image_id"`
	Document         []byte            `json:"document"`
	PKCS7            string            `json:"pkcs7"`
	Tags             map[string]string `json:"tags,omitempty"` // nil when tags in metadata are off
}

// ErrNotFound is returned (wrapped) for a metadata path IMDS does not have.
var ErrNotFound = errors.New("not in instance metadata")

// Identity reads the instance identity: metadata, the signed identity
// document, and the tags when instance tags in metadata are enabled.
func (c *Client) Identity(ctx context.Context) (Identity, error) {
	var id Identity
	for _, f := range []struct {
		path string
		dst  *string
	}{
		{"instance-id", &id.InstanceID},
		{"placement/region", &id.Region},
		{"placement/availability-zone", &id.AvailabilityZone},
		{"local-ipv4", &id.PrivateIPv4},
	} {
		v, err := c.Metadata(ctx, f.path)
		if err != nil {
			return Identity{}, err
		}
		*f.dst = v
	}
	doc, err := c.dynamic(ctx, "instance-identity/document")
	if err != nil {
		return Identity{}, err
	}
	var d imds.InstanceIdentityDocument
	if err := json.Unmarshal([]byte(doc), &d); err != nil {
		return Identity{}, fmt.Errorf("parse instance identity document: %w", err)
	}
	if d.InstanceID != id.InstanceID || d.AccountID == "" {
		return Identity{}, fmt.Errorf("instance identity document names instance %q account %q, metadata says instance %q", d.InstanceID, d.AccountID, id.InstanceID)
	}
	id.Document, id.AccountID, id.InstanceType, id.ImageID = []byte(doc), d.AccountID, d.InstanceType, d.ImageID
	if id.PKCS7, err = c.dynamic(ctx, "instance-identity/pkcs7"); err != nil {
		return Identity{}, err
	}
	if id.Tags, err = c.Tags(ctx); err != nil && !errors.Is(err, ErrNotFound) {
		return Identity{}, err
	}
	return id, nil
}

// Tags returns the instance's tags, or an error wrapping ErrNotFound when
// instance tags in metadata are not enabled.
func (c *Client) Tags(ctx context.Context) (map[string]string, error) {
	list, err := c.Metadata(ctx, "tags/instance")
	if err != nil {
		return nil, err
	}
	tags := map[string]string{}
	for _, k := range strings.Split(list, "\n") {
		if k = strings.TrimSpace(k); k == "" {
			continue
		}
		if tags[k], err = c.Metadata(ctx, "tags/instance/"+k); err != nil {
			return nil, err
		}
	}
	return tags, nil
}

// Metadata reads one meta-data path, e.g. "instance-id".
func (c *Client) Metadata(ctx context.Context, path string) (string, error) {
	out, err := c.api.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
	if err != nil {
		return "", c.wrap("meta-data/"+path, err)
	}
	return readAll(out.Content, "meta-data/"+path)
}

func (c *Client) dynamic(ctx context.Context, path string) (string, error) {
	out, err := c.api.GetDynamicData(ctx, &imds.GetDynamicDataInput{Path: path})
	if err != nil {
		return "", c.wrap("dynamic/"+path, err)
	}
	return readAll(out.Content, "dynamic/"+path)
}

func readAll(rc io.ReadCloser, path string) (string, error) {
	defer func() { _ = rc.Close() }()
	b, err := io.ReadAll(io.LimitReader(rc, maxBody))
	if err != nil {
		return "", fmt.Errorf("read %s from imds: %w", path, err)
	}
	return string(b), nil
}

// wrap names the path and says what to do. The SDK does not keep the token
// request's status in the error chain, so token refusals, timeouts and
// unreachable endpoints all get the same hint.
func (c *Client) wrap(path string, err error) error {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound {
		return fmt.Errorf("read %s: %w", path, ErrNotFound)
	}
	return fmt.Errorf("read %s from imds at %s (IMDSv2 only, never IMDSv1: the instance must allow IMDSv2 tokens, with a hop limit >= 2 for containers): %w",
		path, c.endpoint, err)
}
