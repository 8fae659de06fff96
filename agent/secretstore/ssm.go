//go:build unix

package secretstore

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// SSMOptions configure an SSM Parameter Store source. Only Prefix is required.
// The region and credentials come from a short chain of our own, not the
// SDK's config package (whose shared-config, SSO, STS and process providers
// a host never uses cost the agent about 1 MiB; README "Performance"):
// Region, else AWS_REGION or AWS_DEFAULT_REGION; Credentials, else
// AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY(/AWS_SESSION_TOKEN), else the
// instance role over IMDSv2.
type SSMOptions struct {
	// Prefix is the host's parameter path, e.g. /molecule/prod/tenants/acme.
	Prefix string
	// Region overrides the default chain's region.
	Region string
	// Endpoint overrides the SSM endpoint (tests, VPC endpoints).
	Endpoint string
	// Credentials overrides the default credential chain.
	Credentials aws.CredentialsProvider
	// IMDSEndpoint is where the chain reads instance-role credentials
	// (default: the SDK's). They are read with IMDSv2 only, never IMDSv1.
	IMDSEndpoint string
	// HTTPClient overrides the SDK's HTTP client.
	HTTPClient *http.Client
	// MaxAttempts caps tries per request, throttled ones included (default 5).
	MaxAttempts int
	// MaxBackoff caps the wait between those tries (default 20s).
	MaxBackoff time.Duration
}

// parametersByPath is the one SDK call the source makes.
type parametersByPath interface {
	GetParametersByPath(context.Context, *ssm.GetParametersByPathInput, ...func(*ssm.Options)) (*ssm.GetParametersByPathOutput, error)
}

// SSM reads every parameter under a prefix from SSM Parameter Store,
// recursively, decrypted, all pages.
type SSM struct {
	prefix string
	api    parametersByPath
}

var _ Source = (*SSM)(nil)

// NewSSM builds an SSM source. It checks the options and makes no request.
func NewSSM(ctx context.Context, o SSMOptions) (*SSM, error) {
	prefix, err := cleanPrefix(o.Prefix)
	if err != nil {
		return nil, err
	}
	attempts, backoff := o.MaxAttempts, o.MaxBackoff
	if attempts <= 0 {
		attempts = 5
	}
	if backoff <= 0 {
		backoff = 20 * time.Second
	}
	cfg := aws.Config{
		Region:      o.Region,
		Credentials: o.Credentials,
		Retryer: func() aws.Retryer {
			return retry.NewStandard(func(so *retry.StandardOptions) {
				so.MaxAttempts, so.MaxBackoff = attempts, backoff
				so.RateLimiter = ratelimit.None // keep the cause; our own loop paces refreshes
			})
		},
	}
	if cfg.Region == "" {
		cfg.Region = envRegion()
	}
	if cfg.Credentials == nil {
		cfg.Credentials = defaultCredentials(o)
	}
	if cfg.Region == "" {
		return nil, errors.New("aws region is unknown: set secrets.region or AWS_REGION")
	}
	cfg.Credentials = markCredentialErrors{cfg.Credentials}
	client := ssm.NewFromConfig(cfg, func(so *ssm.Options) {
		if o.Endpoint != "" {
			so.BaseEndpoint = aws.String(o.Endpoint)
		}
		if o.HTTPClient != nil { // set here: config would try to apply AWS_CA_BUNDLE to it
			so.HTTPClient = o.HTTPClient
		}
	})
	return &SSM{prefix: prefix, api: client}, nil
}

// envRegion is the region from the environment, as the SDK reads it.
func envRegion() string {
	if r := os.Getenv("AWS_REGION"); r != "" {
		return r
	}
	return os.Getenv("AWS_DEFAULT_REGION")
}

// defaultCredentials are static keys from the environment when both are
// set, else the instance role's, read over IMDSv2 only (never IMDSv1) and
// cached until shortly before they expire.
func defaultCredentials(o SSMOptions) aws.CredentialsProvider {
	id, secret := os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
	if id != "" && secret != "" {
		return credentials.NewStaticCredentialsProvider(id, secret, os.Getenv("AWS_SESSION_TOKEN"))
	}
	io := imds.Options{Endpoint: o.IMDSEndpoint, EnableFallback: aws.FalseTernary}
	if strings.EqualFold(os.Getenv("AWS_EC2_METADATA_DISABLED"), "true") {
		io.ClientEnableState = imds.ClientDisabled
	}
	if o.HTTPClient != nil {
		io.HTTPClient = o.HTTPClient
	}
	return aws.NewCredentialsCache(ec2rolecreds.New(func(ro *ec2rolecreds.Options) {
		ro.Client = imds.New(io)
	}))
}

// cleanPrefix checks an SSM path and drops a trailing slash.
func cleanPrefix(p string) (string, error) {
	switch {
	case p == "":
		return "", errors.New("secrets.prefix is empty: set it to the host's SSM path, e.g. /molecule/prod/tenants/acme")
	case !strings.HasPrefix(p, "/"):
		return "", fmt.Errorf("secrets.prefix %q must start with /", p)
	case p == "/":
		return p, nil
	}
	p = strings.TrimSuffix(p, "/")
	if err := ValidName(p[1:]); err != nil {
		return "", fmt.Errorf("secrets.prefix: %w", err)
	}
	return p, nil
}

// Location returns the prefix.
func (s *SSM) Location() string { return s.prefix }

// Fetch reads every parameter under the prefix. Names are relative to it:
// /molecule/prod/tenants/acme/db/password is db/password.
func (s *SSM) Fetch(ctx context.Context) (map[string]Secret, error) {
	base := strings.TrimSuffix(s.prefix, "/") + "/"
	pages := ssm.NewGetParametersByPathPaginator(s.api, &ssm.GetParametersByPathInput{
		Path:           aws.String(s.prefix),
		Recursive:      aws.Bool(true),
		WithDecryption: aws.Bool(true),
		MaxResults:     aws.Int32(10),
	})
	out := map[string]Secret{}
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, s.classify(err)
		}
		for _, p := range page.Parameters {
			rel, ok := strings.CutPrefix(aws.ToString(p.Name), base)
			if ok && rel != "" {
				out[rel] = New(aws.ToString(p.Value))
			}
		}
	}
	if len(out) == 0 {
		return nil, &FetchError{Location: s.prefix, Kind: ErrEmpty,
			Msg: fmt.Sprintf("no parameters under %s: put the host's secrets there or fix secrets.prefix", s.prefix)}
	}
	return out, nil
}

// classify turns an SDK error into a FetchError that says what to do.
func (s *SSM) classify(err error) error {
	fe := &FetchError{Location: s.prefix, Err: err}
	var ae smithy.APIError
	var re *awshttp.ResponseError
	var se *smithyhttp.RequestSendError
	switch {
	case errors.As(err, new(*credentialsError)):
		fe.Kind = ErrNoCredentials
		fe.Msg = fmt.Sprintf("no aws credentials to read %s: attach an instance profile (read over IMDSv2) or configure credentials", s.prefix)
	case errors.As(err, &ae) && ae.ErrorCode() == "AccessDeniedException":
		fe.Kind = ErrAccessDenied
		fe.Msg = fmt.Sprintf("instance role cannot read %s: grant ssm:GetParametersByPath (and kms:Decrypt via SSM) on it", s.prefix)
	case errors.As(err, &ae) && retry.IsErrorThrottles(retry.DefaultThrottles).IsErrorThrottle(err).Bool():
		fe.Kind = ErrThrottled
		fe.Msg = fmt.Sprintf("ssm kept throttling reads of %s after retries: lower the refresh rate or the account's SSM call volume", s.prefix)
	case errors.As(err, &ae) && rejectedCodes[ae.ErrorCode()]:
		fe.Kind = ErrRejected
		fe.Msg = fmt.Sprintf("ssm rejected the credentials reading %s: check the instance role credentials and the host clock", s.prefix)
	case errors.As(err, &re) && re.HTTPStatusCode() >= 500:
		fe.Kind = ErrUnreachable
		fe.Msg = fmt.Sprintf("ssm endpoint unavailable reading %s", s.prefix)
	case errors.As(err, &se):
		fe.Kind = ErrUnreachable
		fe.Msg = fmt.Sprintf("cannot reach ssm to read %s", s.prefix)
	case errors.As(err, &ae):
		fe.Kind = ErrUnreachable
		fe.Msg = fmt.Sprintf("read ssm parameters under %s", s.prefix)
	default:
		fe.Kind, fe.Msg = ErrUnreachable, fmt.Sprintf("read ssm parameters under %s", s.prefix)
	}
	return fe
}

// rejectedCodes are the error codes AWS gives for bad credentials or signatures.
var rejectedCodes = map[string]bool{
	"InvalidSignatureException":           true,
	"UnrecognizedClientException":         true,
	"IncompleteSignatureException":        true,
	"MissingAuthenticationTokenException": true,
	"ExpiredTokenException":               true,
	"InvalidClientTokenId":                true,
	"SignatureDoesNotMatch":               true,
}

// credentialsError marks a failure to get credentials, which the SDK
// otherwise reports untyped.
type credentialsError struct{ err error }

func (e *credentialsError) Error() string { return e.err.Error() }
func (e *credentialsError) Unwrap() error { return e.err }

// markCredentialErrors wraps a provider so its failures are *credentialsError.
type markCredentialErrors struct{ p aws.CredentialsProvider }

func (m markCredentialErrors) Retrieve(ctx context.Context) (aws.Credentials, error) {
	c, err := m.p.Retrieve(ctx)
	if err != nil {
		return c, &credentialsError{err}
	}
	return c, nil
}
